package cart

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/handoff-dev/handoff/internal/coalesce"
)

// Checkout's two writes to the cart row (claim, then mark checked out) go in batches: the
// claims (and the marks) of concurrent checkouts arriving while one batch is written go as the
// next, in one statement. Each is one row, so Postgres spent its time on the statement and the
// commit around it, not on the row: at 64 shoppers a batch carries tens, for the cost of about
// one. A request the batch did not settle (refused, or the batch failed) is made again alone,
// by the one-cart statement, which says why.

// maxCartWriteBatch bounds one batched statement (checkout's claims and marks, edits).
const maxCartWriteBatch = 128

// cartWriteTimeout bounds one batch, whoever waits for it.
const cartWriteTimeout = 10 * time.Second

// claimReq is one checkout's claim (see claim).
type claimReq struct {
	cartID, customer, key string
	expectedVersion       int64
}

// claimManySQL is claim's UPDATE for many carts: the same conditions, one row each. The
// request columns are named apart from the cart's so the cart's columns need no prefix. Every
// claim, a retry joining the lease too, moves the lease to at least a whole lease from now: a
// request places its order only after its own claim, so the lease must outlast that order's
// place_order and write (see settle), or the cart could open before the order lands.
const claimManySQL = `
	UPDATE carts SET checkout_key = u.r_key,
	       checkout_until = greatest(checkout_until, now() + $5::bigint * interval '1 microsecond'),
	       checkout_joins = CASE WHEN checkout_until IS NULL THEN 1 ELSE checkout_joins + 1 END,
	       checkout_time = CASE WHEN checkout_until IS NULL THEN now() ELSE checkout_time END
	FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(r_id, r_customer, r_key, r_version)
	WHERE id = u.r_id AND customer_id = u.r_customer AND state = $6
	  AND (checkout_until IS NULL OR (checkout_key = u.r_key AND checkout_until > now()))
	  AND (u.r_version = 0 OR version = u.r_version)
	  AND jsonb_array_length(lines) > 0
	  AND (pickup_store_id IS NOT NULL OR near_lat IS NOT NULL)
	RETURNING ` + cartColumns

// claimMany claims the carts of reqs in one statement. A request whose cart did not match
// (refused, or another request of the batch claimed it first) gets a nil cart.
func (s *Service) claimMany(ctx context.Context, reqs []claimReq) []coalesce.Result[*cartRow] {
	ctx, cancel := context.WithTimeout(ctx, cartWriteTimeout)
	defer cancel()
	out := make([]coalesce.Result[*cartRow], len(reqs))
	// In cart order, the order every batch locks its rows in.
	sorted := slices.SortedFunc(slices.Values(reqs), func(a, b claimReq) int { return cmp.Compare(a.cartID, b.cartID) })
	ids, customers, keys, versions := make([]string, len(reqs)), make([]string, len(reqs)), make([]string, len(reqs)), make([]int64, len(reqs))
	for i, r := range sorted {
		ids[i], customers[i], keys[i], versions[i] = r.cartID, r.customer, r.key, r.expectedVersion
	}
	fail := func(err error) []coalesce.Result[*cartRow] {
		for i := range out {
			out[i] = coalesce.Result[*cartRow]{Err: fmt.Errorf("claim %d carts for checkout: %w", len(reqs), err)}
		}
		return out
	}
	rows, err := s.db.Query(ctx, claimManySQL, ids, customers, keys, versions, s.checkoutLease.Microseconds(), stateOpen)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		c := &cartRow{}
		if err := rows.Scan(c.scanTargets()...); err != nil {
			return fail(err)
		}
		// The row went to a request it matched, version included: requests for one cart
		// with one key but different expected versions may share the batch, and one that
		// named a stale version must not take the claim another's matching version won.
		for i, r := range reqs {
			if out[i].Value == nil && r.cartID == c.ID && r.customer == c.CustomerID && r.key == deref(c.CheckoutKey) &&
				(r.expectedVersion == 0 || r.expectedVersion == c.Version) {
				out[i].Value = c
				break
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return out
}

// markReq is one checkout's mark (see markCheckedOut).
type markReq struct {
	cartID, key, orderID string
	lines                []byte // carts.lines as the order has them (linesOf)
}

// markManySQL is markCheckedOut's UPDATE for many carts. Only a cart still under the lease of
// the checkout's key (running, or lapsed and being settled) is marked: once that lease has ended
// (its order rejected, the cart opened and perhaps edited since, or claimed by another key) a
// late mark, such as a slow duplicate request's, must not check it out.
const markManySQL = `
	UPDATE carts SET state = 'checked_out', order_id = u.r_order, checkout_key = u.r_key, checkout_until = NULL,
	       lines = u.r_lines, version = version + 1, update_time = now()
	FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS u(r_id, r_key, r_order, r_lines)
	WHERE id = u.r_id AND state <> 'checked_out' AND checkout_key = u.r_key AND checkout_until IS NOT NULL
	RETURNING id, order_id, version, update_time`

// markMany marks the carts of reqs checked out in one statement. A request whose cart was
// not marked by it (checked out already, by another request of the batch, or no longer under
// its key's lease) gets nil.
func (s *Service) markMany(ctx context.Context, reqs []markReq) []coalesce.Result[*cartMark] {
	ctx, cancel := context.WithTimeout(ctx, cartWriteTimeout)
	defer cancel()
	out := make([]coalesce.Result[*cartMark], len(reqs))
	sorted := slices.SortedFunc(slices.Values(reqs), func(a, b markReq) int { return cmp.Compare(a.cartID, b.cartID) })
	ids, keys, orders := make([]string, len(reqs)), make([]string, len(reqs)), make([]string, len(reqs))
	lines := make([]string, len(reqs))
	for i, r := range sorted {
		ids[i], keys[i], orders[i], lines[i] = r.cartID, r.key, r.orderID, string(r.lines)
	}
	fail := func(err error) []coalesce.Result[*cartMark] {
		for i := range out {
			out[i] = coalesce.Result[*cartMark]{Err: fmt.Errorf("mark %d carts checked out: %w", len(reqs), err)}
		}
		return out
	}
	rows, err := s.db.Query(ctx, markManySQL, ids, keys, orders, lines)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, orderID string
			m           cartMark
		)
		if err := rows.Scan(&id, &orderID, &m.version, &m.updateTime); err != nil {
			return fail(err)
		}
		for i, r := range reqs {
			if out[i].Value == nil && r.cartID == id && r.orderID == orderID {
				out[i].Value = &m
				break
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return out
}
