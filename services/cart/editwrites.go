package cart

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/coalesce"
)

// A shopper's edit is decided in Go and stored by one conditional UPDATE (see tryMutate). The
// UPDATEs of concurrent edits of different carts go in batches, as checkout's writes do: what
// arrives while one batch is written goes as the next, in one statement and one commit. Each
// row keeps its own conditions, so an edit that misses (its cart moved on) misses alone and is
// decided again; two edits of one cart in a batch match its row once, and the other misses.

// editReq is one edit's UPDATE: the cart as decided, on the version it was decided on, and the
// edit's own id (see recent_edits in migration 00005).
type editReq struct {
	cartID, customer, editID string
	version                  int64
	lines                    string // JSON
	storeID                  *string
	nearLat, nearLng         *float64
	nearRadius               *float64
}

// editDone is a stored edit: the cart's new version and time. nil: the edit missed.
type editDone struct {
	version    int64
	updateTime time.Time
}

// editManySQL is tryMutate's UPDATE for many carts: the same conditions, one row each,
// returning which requests it stored.
const editManySQL = `
	UPDATE carts SET lines = u.r_lines, pickup_store_id = u.r_store, near_lat = u.r_lat, near_lng = u.r_lng,
	       near_radius_m = u.r_radius, version = version + 1, update_time = now(),
	       recent_edits = (ARRAY[u.r_edit] || recent_edits)[1:` + recentEdits + `]
	FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[], $6::float8[], $7::float8[], $8::float8[], $9::uuid[])
	     WITH ORDINALITY AS u(r_id, r_customer, r_version, r_lines, r_store, r_lat, r_lng, r_radius, r_edit, r_ord)
	WHERE id = u.r_id AND customer_id = u.r_customer AND version = u.r_version
	  AND state = $10 AND checkout_until IS NULL
	RETURNING u.r_ord, version, update_time`

// editMany stores the edits of reqs in one statement. An edit whose cart did not match gets nil.
func (s *Service) editMany(ctx context.Context, reqs []editReq) []coalesce.Result[*editDone] {
	ctx, cancel := context.WithTimeout(ctx, cartWriteTimeout)
	defer cancel()
	out := make([]coalesce.Result[*editDone], len(reqs))
	// In cart order, the order every batch locks its rows in.
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(reqs[a].cartID, reqs[b].cartID) })
	n := len(reqs)
	ids, customers, lines, editIDs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	versions := make([]int64, n)
	stores := make([]*string, n)
	lats, lngs, radii := make([]*float64, n), make([]*float64, n), make([]*float64, n)
	for k, i := range order {
		r := reqs[i]
		ids[k], customers[k], versions[k], lines[k], editIDs[k] = r.cartID, r.customer, r.version, r.lines, r.editID
		stores[k], lats[k], lngs[k], radii[k] = r.storeID, r.nearLat, r.nearLng, r.nearRadius
	}
	// A failed batch has each edit written alone (coalesce.FailAll), and the statement of one
	// edit says why.
	fail := func(err error) []coalesce.Result[*editDone] {
		return coalesce.FailAll[*editDone](n, fmt.Errorf("write cart %s: %w", reqs[0].cartID, err))
	}
	rows, err := s.db.Query(ctx, editManySQL, ids, customers, versions, lines, stores, lats, lngs, radii, editIDs, stateOpen)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ord  int64
			done editDone
		)
		if err := rows.Scan(&ord, &done.version, &done.updateTime); err != nil {
			return fail(err)
		}
		out[order[ord-1]].Value = &done
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	if s.loseEditReplies.Load() > 0 && s.loseEditReplies.Add(-1) >= 0 {
		return fail(errors.New("the reply was lost (test hook)"))
	}
	return out
}

// recentEdits is how many edit ids a cart keeps: an edit whose reply was lost looks for its own
// among them, and a shopper makes far fewer edits of one cart in the time that takes.
const recentEdits = "8"

// storedEdit returns customer's cart as stored when the edit editID is among its recent edits,
// or nil when it is not.
func storedEdit(ctx context.Context, q querier, customer, cartID, editID string) (*cartRow, error) {
	c := &cartRow{}
	err := q.QueryRow(ctx, `SELECT `+cartColumns+` FROM carts WHERE id = $1 AND customer_id = $2 AND $3::uuid = ANY (recent_edits)`,
		cartID, customer, editID).Scan(c.scanTargets()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cart %s: %w", cartID, err)
	}
	return c, nil
}
