package cart

import (
	"context"
	"fmt"

	"github.com/handoff-dev/handoff/internal/coalesce"
	"github.com/handoff-dev/handoff/internal/pgdb"
)

// New carts are stored in batches, as edits and checkout's writes are: the INSERTs of
// concurrent CreateCart calls arriving while one batch is written go as the next, one
// statement and one commit. Should a batch fail, each of its carts is inserted alone
// (coalesce.FailAll), which gives a failing one its own error.

// createReq is one new cart: its fresh id, its owner, and what it starts with (lines as
// stored, "[]" for none; pickup columns nil for no choice).
type createReq struct {
	id, customer, lines          string
	storeID                      *string
	nearLat, nearLng, nearRadius *float64
}

const createManySQL = `INSERT INTO carts (id, customer_id, lines, pickup_store_id, near_lat, near_lng, near_radius_m)
	SELECT id, customer_id, lines::jsonb, store_id, lat, lng, radius
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::float8[])
		AS t(id, customer_id, lines, store_id, lat, lng, radius)
	RETURNING ` + cartColumns

// createMany inserts the carts of reqs in one statement and returns each one's stored row.
// Inserted alone, a cart may be there already: its batch can have committed with its answer
// lost (a dropped connection, a timeout), and the id is the caller's own, so the stored row is
// the one it asked for.
func (s *Service) createMany(ctx context.Context, reqs []createReq) []coalesce.Result[*cartRow] {
	ctx, cancel := context.WithTimeout(ctx, cartWriteTimeout)
	defer cancel()
	out := make([]coalesce.Result[*cartRow], len(reqs))
	fail := func(err error) []coalesce.Result[*cartRow] {
		if len(reqs) == 1 && pgdb.IsUniqueViolation(err) {
			c, err := loadCart(ctx, s.db, reqs[0].customer, reqs[0].id, false)
			return []coalesce.Result[*cartRow]{{Value: c, Err: err}}
		}
		return coalesce.FailAll[*cartRow](len(reqs), fmt.Errorf("create cart: %w", err))
	}
	ids, customers, lines := make([]string, len(reqs)), make([]string, len(reqs)), make([]string, len(reqs))
	stores := make([]*string, len(reqs))
	lats, lngs, radii := make([]*float64, len(reqs)), make([]*float64, len(reqs)), make([]*float64, len(reqs))
	at := make(map[string]int, len(reqs))
	for i, r := range reqs {
		ids[i], customers[i], lines[i] = r.id, r.customer, r.lines
		stores[i], lats[i], lngs[i], radii[i] = r.storeID, r.nearLat, r.nearLng, r.nearRadius
		at[r.id] = i
	}
	rows, err := s.db.Query(ctx, createManySQL, ids, customers, lines, stores, lats, lngs, radii)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		c := &cartRow{}
		if err := rows.Scan(c.scanTargets()...); err != nil {
			return fail(err)
		}
		if i, ok := at[c.ID]; ok {
			out[i].Value = c
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	for i := range out {
		if out[i].Value == nil {
			// Not possible for an INSERT that succeeded; refuse rather than hand back nothing.
			out[i].Err = fmt.Errorf("create cart %s: the insert returned no row for it", reqs[i].id)
		}
	}
	return out
}
