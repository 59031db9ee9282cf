package inventory

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Changes reported after the fact (a vendor POS's till sales and counts) can arrive out of the
// order they happened in; each applies as of when it happened. A stock row keeps when its last
// count was taken (count_time: SetStock, AdjustStock's COUNT correction, the initial load): a
// change that happened before it is in the count already, and a count keeps the changes
// recorded since it was taken. Times compare as given, so the reporting system's clock should
// be right.

// maxCountAge bounds how long ago a count reported after the fact may have been taken: the
// changes recorded since are read back to then.
const maxCountAge = 24 * time.Hour

// maxClockSkew is how far in the future an occurrence time may be (the reporting system's
// clock ahead of ours), and how much earlier than a change's occurrence its recording may be.
const maxClockSkew = 5 * time.Minute

// checkOccurTime validates a request's occur_time (named field): nil when unset, else not in the future
// (beyond maxClockSkew). How old it may be is decided once the request is known to be new
// (decideChange): a retry of a change applied long ago is answered as the first time. Set is
// told by the field's presence, not by the time: 0001-01-01T00:00:00Z is Go's zero time, and
// was taken for unset (a count now) while a second later was refused as too old.
func checkOccurTime(v *rpcerr.Violations, field string, ts *timestamppb.Timestamp, now time.Time) *time.Time {
	if ts == nil {
		return nil
	}
	if err := ts.CheckValid(); err != nil {
		v.Addf(field, "not a valid time: %v", err)
		return nil
	}
	t := ts.AsTime().Truncate(time.Microsecond) // as Postgres keeps it
	if t.After(now.Add(maxClockSkew)) {
		v.Addf(field, "%s is in the future", t.Format(time.RFC3339))
	}
	return &t
}

// ledgerScan is what changedSince read.
type ledgerScan struct {
	// sum is the on-hand change asked by the ledger rows that happened after the count.
	sum int64
	// newest is the id of the newest ledger row read: a second scan starts above it.
	newest int64
	// superseded, when set, is when a count found among them was taken.
	superseded *time.Time
}

// changedSince sums the on-hand changes of a stock row above ledger id above that happened
// (their own occurrence, or when they were recorded) after t: a count taken at t did not see
// them. A change shortened to what was reserved counts as asked (the units left the shelf
// all the same). It reads the ledger back from the newest row, a page at a time, to the rows
// recorded maxClockSkew before t (nothing recorded earlier can have happened after t).
//
// Every ledger row of a stock row is written under the row's lock, so once a scan has seen
// row N every row below N is there: a scan before the lock and one above its newest row after
// it read each row once.
func changedSince(ctx context.Context, tx pgx.Tx, store, sku string, t time.Time, above int64) (ledgerScan, error) {
	const page = 500
	out := ledgerScan{newest: above}
	last := int64(math.MaxInt64)
	for {
		rows, err := tx.Query(ctx, `SELECT id, kind, coalesce(requested, on_hand_delta), coalesce(occur_time, create_time), create_time
			FROM movements WHERE store_id = $1 AND sku = $2 AND id > $3 AND id < $4 ORDER BY id DESC LIMIT $5`,
			store, sku, above, last, page)
		if err != nil {
			return ledgerScan{}, fmt.Errorf("read changes since the count: %w", err)
		}
		var (
			n, id       int64
			kind        string
			delta       int32
			at, created time.Time
			done        bool
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &kind, &delta, &at, &created}, func() error {
			n++
			last, out.newest = id, max(out.newest, id)
			if done || created.Before(t.Add(-maxClockSkew)) {
				done = true
				return nil
			}
			if !at.After(t) {
				return nil
			}
			if kind == kindSet || kind == kindCount {
				// A later count (one from before count times were kept: count_time catches
				// the others first).
				if out.superseded == nil {
					out.superseded = &at
				}
				return nil
			}
			out.sum += int64(delta)
			return nil
		})
		if err != nil {
			return ledgerScan{}, fmt.Errorf("read changes since the count: %w", err)
		}
		if done || n < page {
			return out, nil
		}
	}
}

// decision is what a stock change does to its locked row.
type decision struct {
	next level
	// note is the ledger note when it is not the request's.
	note string
	// counts is true when the row's count time moves to the change's (a count that is not
	// superseded).
	counts bool
	// short is, for a count, the units it could not take off because open orders reserved them
	// (clamped to reserved): the row's count_short.
	short int32
}

// decideChange is c's effect on the locked level cur: a change reported after the fact that
// happened before the row's last count is in that count already, and leaves on hand as it
// is; a count taken in the past keeps what was recorded since that happened after it (pre:
// what the scan before the lock read), unless a later count supersedes it. fresh says the
// row was created by this change.
func (s *Service) decideChange(ctx context.Context, tx pgx.Tx, c stockChange, cur level, pre ledgerScan, fresh bool) (decision, error) {
	var counted *time.Time
	if c.occurred != nil {
		if c.kind == kindSet && c.occurred.Before(s.clock.Now().Add(-maxCountAge)) {
			return decision{}, rpcerr.Invalid("occur_time", fmt.Sprintf("%s is more than %s ago: count again",
				c.occurred.Format(time.RFC3339), maxCountAge))
		}
		if err := tx.QueryRow(ctx, `SELECT count_time FROM stock WHERE store_id = $1 AND sku = $2`, c.storeID, c.sku).Scan(&counted); err != nil {
			return decision{}, fmt.Errorf("read count time: %w", err)
		}
	}
	before := func(at time.Time) decision {
		what, next := "happened", cur
		if c.kind == kindSet {
			what = "counted"
			if c.safety != nil {
				next.safety = *c.safety
			}
		}
		return decision{next: next, note: strings.TrimSpace(fmt.Sprintf("%s [%s at %s, before the count at %s: on hand unchanged]", c.note, what,
			c.occurred.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)))}
	}
	if counted != nil && !c.occurred.After(*counted) {
		return before(*counted), nil
	}
	var later int64
	if c.kind == kindSet && c.occurred != nil {
		rest, err := changedSince(ctx, tx, c.storeID, c.sku, *c.occurred, pre.newest)
		if err != nil {
			return decision{}, err
		}
		for _, at := range []*time.Time{rest.superseded, pre.superseded} {
			if at != nil {
				return before(*at), nil
			}
		}
		later = max(min(pre.sum+rest.sum, maxStockLevel), -maxStockLevel)
	}
	next, note, short, err := c.apply(cur, int32(later), fresh)
	if err != nil {
		return decision{}, err
	}
	if short > 0 {
		s.log.WarnContext(ctx, "stock change shortened to what is reserved: open orders are short", "store_id", c.storeID, "sku", c.sku,
			"reserved", cur.reserved, "short", short, "note", note)
	}
	// A correction found by counting (AdjustStock's COUNT) is a count too: what happened
	// before it is in it.
	return decision{next: next, note: note, counts: c.kind == kindSet || c.kind == kindCount, short: short}, nil
}

// sameOccurrence reports whether a stored movement says it happened when a retried request
// does (neither saying is the same too).
func sameOccurrence(m *inventoryv1.StockMovement, occurred *time.Time) bool {
	if occurred == nil {
		return m.GetOccurTime() == nil
	}
	return m.GetOccurTime() != nil && m.GetOccurTime().AsTime().Equal(*occurred)
}
