package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// The rules CheckInvariants verifies, as reported in InvariantViolation.rule.
const (
	RuleLevelsInRange   = "0 <= reserved <= on_hand, safety_stock >= 0"
	RuleReservedIsHeld  = "reserved = sum(open holds)"
	RuleLedgerOnHand    = "on_hand = sum(ledger on_hand_delta)"
	RuleLedgerReserved  = "reserved = sum(ledger reserved_delta)"
	RuleStockRowExists  = "open holds and ledger rows have a stock row"
	RuleHeldWithinStock = "every hold placed left reserved <= on_hand - safety_stock"
	RuleVersionInOrder  = "version = the last ledger row's stock_version, which never goes back or repeats"
	RuleHoldEndsOnce    = "each hold has one hold_placed row and, once ended, one end row of its kind (hold_committed if committed, else hold_released)"
	RuleHoldEndsInTime  = "no hold is open past its deadline plus a sweep interval and 30 s"
)

const maxViolations = 1000

// invariantsSQL finds every (store, SKU) that breaks a rule, over stock rows, open holds and
// the ledger together (a key present in only one of them is checked too). %[1]s filters each
// source by store.
const invariantsSQL = `WITH
	s AS (SELECT store_id, sku, on_hand, reserved, safety_stock, version FROM stock %[1]s),
	h AS (SELECT store_id, sku, sum(quantity)::bigint AS held FROM holds WHERE state = 'open' %[2]s GROUP BY store_id, sku),
	l AS (SELECT store_id, sku, sum(on_hand_delta)::bigint AS oh, sum(reserved_delta)::bigint AS rs,
		count(*) FILTER (WHERE kind = 'hold_placed' AND reserved_after > on_hand_after - safety_stock_after) AS over,
		max(stock_version) AS last_version, count(*) FILTER (WHERE back) AS back
		FROM (SELECT *, stock_version < lag(stock_version) OVER (PARTITION BY store_id, sku ORDER BY id) AS back
			FROM movements %[1]s) m
		GROUP BY store_id, sku),
	-- A version written by two transactions (ledger rows of one version with two inserting
	-- transaction ids, xmin): one transaction's rows share a version, another's must not. The
	-- ledger is never written in a subtransaction, whose rows would carry an id of their own.
	r AS (SELECT store_id, sku, count(*) AS repeated FROM (
			SELECT store_id, sku FROM movements WHERE stock_version IS NOT NULL %[2]s
			GROUP BY store_id, sku, stock_version HAVING count(DISTINCT xmin::text) > 1) x
		GROUP BY store_id, sku),
	k AS (SELECT store_id, sku FROM s UNION SELECT store_id, sku FROM h UNION SELECT store_id, sku FROM l)
SELECT k.store_id, k.sku, s.on_hand IS NOT NULL, coalesce(s.on_hand, 0), coalesce(s.reserved, 0), coalesce(s.safety_stock, 0),
	coalesce(h.held, 0), coalesce(l.oh, 0), coalesce(l.rs, 0), coalesce(l.over, 0),
	coalesce(s.version, 0), l.last_version, coalesce(l.back, 0), coalesce(r.repeated, 0)
FROM k
	LEFT JOIN s ON s.store_id = k.store_id AND s.sku = k.sku
	LEFT JOIN h ON h.store_id = k.store_id AND h.sku = k.sku
	LEFT JOIN l ON l.store_id = k.store_id AND l.sku = k.sku
	LEFT JOIN r ON r.store_id = k.store_id AND r.sku = k.sku
WHERE (s.on_hand IS NULL AND (coalesce(h.held, 0) <> 0 OR coalesce(l.oh, 0) <> 0 OR coalesce(l.rs, 0) <> 0))
	OR s.reserved < 0 OR s.reserved > s.on_hand OR s.safety_stock < 0
	OR s.reserved <> coalesce(h.held, 0)
	OR s.on_hand <> coalesce(l.oh, 0) OR s.reserved <> coalesce(l.rs, 0)
	OR coalesce(l.over, 0) > 0
	OR s.version <> l.last_version OR coalesce(l.back, 0) > 0 OR coalesce(r.repeated, 0) > 0
ORDER BY k.store_id, k.sku
LIMIT ` + "1000"

// holdRulesSQL finds every hold that breaks a rule of its own: open past its deadline plus
// $1 µs, or whose ledger rows do not tell its life (placed once; ended once, as it ended; not
// ended while open). %[1]s / %[2]s filter the ledger and the holds by store ($2).
const holdRulesSQL = `
SELECT h.store_id, h.sku, h.id::text, h.order_id, h.state,
	h.state = 'open' AND h.expire_time < now() - $1::bigint * interval '1 microsecond',
	coalesce(m.placed, 0), coalesce(m.committed, 0), coalesce(m.released, 0)
FROM holds h LEFT JOIN (
	SELECT hold_id, count(*) FILTER (WHERE kind = 'hold_placed') AS placed,
		count(*) FILTER (WHERE kind = 'hold_committed') AS committed,
		count(*) FILTER (WHERE kind = 'hold_released') AS released
	FROM movements WHERE hold_id IS NOT NULL %[1]s GROUP BY hold_id) m ON m.hold_id = h.id
WHERE (h.state = 'open' AND h.expire_time < now() - $1::bigint * interval '1 microsecond'
	OR coalesce(m.placed, 0) <> 1
	OR coalesce(m.committed, 0) + coalesce(m.released, 0) <> CASE WHEN h.state = 'open' THEN 0 ELSE 1 END
	OR h.state = 'committed' AND coalesce(m.committed, 0) <> 1
	OR h.state IN ('released', 'expired') AND coalesce(m.released, 0) <> 1) %[2]s
ORDER BY h.store_id, h.sku, h.id
LIMIT ` + "1000"

// sweepGrace is how long past a sweep's interval an overdue hold may wait for it before
// CheckInvariants reports it: a sweep's own work, and a copy taking over from one stopped.
const sweepGrace = 30 * time.Second

// CheckInvariants verifies, for every stock level (of one store, or all): 0 <= reserved <=
// on_hand, reserved = the sum of its open holds, that the ledger sums to the levels, and that
// no hold was ever placed beyond on hand less safety stock (the levels each hold_placed row
// recorded: no oversell at the time of reserving, whatever has changed since), and that the
// row's version is its last ledger row's and never went back or repeated (versions order
// changes); and, for every hold, that it is not open past its deadline plus a sweep and that
// the ledger tells its life (placed once, ended once as it ended). It reads one consistent snapshot and changes nothing; it is meant for operators
// and tests, and scans the whole ledger, so run it off-peak on a large chain.
func (s *Service) CheckInvariants(ctx context.Context, storeID string) (*inventoryv1.CheckInvariantsResponse, error) {
	if storeID != "" {
		var v rpcerr.Violations
		checkStoreID(&v, "store_id", storeID)
		if err := v.Err(); err != nil {
			return nil, err
		}
		if err := s.requireStore(ctx, storeID); err != nil {
			return nil, err
		}
	}
	filter, holdFilter, args := "", "", []any{}
	if storeID != "" {
		filter, holdFilter, args = "WHERE store_id = $1", "AND store_id = $1", []any{storeID}
	}
	res := &inventoryv1.CheckInvariantsResponse{}
	err := pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM stock "+filter, args...).Scan(&res.LevelsChecked); err != nil {
			return fmt.Errorf("count stock levels: %w", err)
		}
		rows, err := tx.Query(ctx, fmt.Sprintf(invariantsSQL, filter, holdFilter), args...)
		if err != nil {
			return fmt.Errorf("check invariants: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				store, sku                  string
				hasRow                      bool
				onHand, reserved, safety    int32
				held, ledgerOH, ledgerResvd int64
				over, version, back         int64
				repeated                    int64
				lastVersion                 *int64
			)
			if err := rows.Scan(&store, &sku, &hasRow, &onHand, &reserved, &safety, &held, &ledgerOH, &ledgerResvd, &over,
				&version, &lastVersion, &back, &repeated); err != nil {
				return fmt.Errorf("check invariants: %w", err)
			}
			add := func(rule, format string, a ...any) {
				if len(res.Violations) < maxViolations {
					res.Violations = append(res.Violations, &inventoryv1.InvariantViolation{StoreId: store, Sku: sku, Rule: rule, Detail: fmt.Sprintf(format, a...)})
				}
			}
			if !hasRow {
				add(RuleStockRowExists, "no stock row, but open holds of %d units and ledger sums on_hand %d, reserved %d", held, ledgerOH, ledgerResvd)
				continue
			}
			if reserved < 0 || reserved > onHand || safety < 0 {
				add(RuleLevelsInRange, "on_hand %d, reserved %d, safety_stock %d", onHand, reserved, safety)
			}
			if int64(reserved) != held {
				add(RuleReservedIsHeld, "reserved %d, open holds %d", reserved, held)
			}
			if int64(onHand) != ledgerOH {
				add(RuleLedgerOnHand, "on_hand %d, ledger %d", onHand, ledgerOH)
			}
			if int64(reserved) != ledgerResvd {
				add(RuleLedgerReserved, "reserved %d, ledger %d", reserved, ledgerResvd)
			}
			if over > 0 {
				add(RuleHeldWithinStock, "%d holds placed beyond on hand less safety stock", over)
			}
			// Ledger rows from before versions were kept have none; they check nothing here.
			if lastVersion != nil && *lastVersion != version {
				add(RuleVersionInOrder, "version %d, last ledger row's %d", version, *lastVersion)
			}
			if back > 0 {
				add(RuleVersionInOrder, "%d ledger rows carry a lower version than the row before them", back)
			}
			if repeated > 0 {
				add(RuleVersionInOrder, "%d versions were written by more than one transaction", repeated)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("check invariants: %w", err)
		}
		return s.checkHolds(ctx, tx, storeID, res)
	})
	if err != nil {
		return nil, err
	}
	res.Ok = len(res.Violations) == 0
	return res, nil
}

// checkHolds adds to res the holds that break RuleHoldEndsInTime or RuleHoldEndsOnce.
func (s *Service) checkHolds(ctx context.Context, tx pgx.Tx, storeID string, res *inventoryv1.CheckInvariantsResponse) error {
	grace := s.cfg.SweepInterval + sweepGrace
	ledger, holds, args := "", "", []any{grace.Microseconds()}
	if storeID != "" {
		ledger, holds, args = "AND store_id = $2", "AND h.store_id = $2", append(args, storeID)
	}
	rows, err := tx.Query(ctx, fmt.Sprintf(holdRulesSQL, ledger, holds), args...)
	if err != nil {
		return fmt.Errorf("check holds: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			store, sku, id, order, state string
			overdue                      bool
			placed, committed, released  int64
		)
		if err := rows.Scan(&store, &sku, &id, &order, &state, &overdue, &placed, &committed, &released); err != nil {
			return fmt.Errorf("check holds: %w", err)
		}
		if len(res.Violations) >= maxViolations {
			break
		}
		v := &inventoryv1.InvariantViolation{StoreId: store, Sku: sku, Rule: RuleHoldEndsOnce,
			Detail: fmt.Sprintf("hold %s of order %s, %s: ledger has %d hold_placed, %d hold_committed, %d hold_released rows",
				id, order, state, placed, committed, released)}
		if overdue {
			v.Rule, v.Detail = RuleHoldEndsInTime, fmt.Sprintf("hold %s of order %s open more than %s past its deadline", id, order, grace)
		}
		res.Violations = append(res.Violations, v)
	}
	return rows.Err()
}
