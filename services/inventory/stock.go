package inventory

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// adjustmentKinds maps an adjustment reason to its ledger kind and the sign its delta must
// have (+1, -1, or 0 for either).
var adjustmentKinds = map[inventoryv1.AdjustmentReason]struct {
	kind string
	sign int32
}{
	inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY:      {"delivery", +1},
	inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT:         {kindCount, 0},
	inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE: {"in_store_sale", -1},
	inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_RETURN:        {"return", +1},
	inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE:        {"damage", -1},
}

const maxStockLevel = 1_000_000_000

// stockChange is an admin change of one stock row, validated.
type stockChange struct {
	storeID, sku, key, note string
	kind                    string
	// occurred is when the change happened, when the request said (nil: now).
	occurred *time.Time
	// requested is what the request asked: a count's on hand, a change's delta.
	requested int32
	// safety is the safety stock a count sets (nil: kept). A setting, not part of the count,
	// so it applies even when a later count supersedes the count.
	safety *int32
	// apply computes the new level from the locked current one, or refuses. later is, for a
	// count (kind set) that occurred in the past, the on-hand change recorded since that
	// happened after it; fresh says the row was created by this change (a SKU never stocked
	// at the store). note, when not "", is what the ledger entry says instead of the request's;
	// short is how many units a change apply had to shorten leaves open orders short.
	apply func(cur level, later int32, fresh bool) (next level, note string, short int32, err error)
	// same reports whether a stored movement made with the same key is this very change.
	same func(m *inventoryv1.StockMovement) bool
}

// The reasons (google.rpc.ErrorInfo, domain ErrorDomain) of the refusals of a stock change
// for the stock as it stands, so that a caller tells them apart without reading the message:
// on hand would go below 0 or below the units reserved (a later count or release may make the
// change fit), or above the maximum level (nothing will). They are a contract, like the
// message's field name: the pos-adapter defers a vendor's change refused below.
const (
	ErrorDomain              = "inventory.handoff.dev"
	ReasonStockBelowZero     = "STOCK_BELOW_ZERO"
	ReasonStockBelowReserved = "STOCK_BELOW_RESERVED"
	ReasonStockAboveMaximum  = "STOCK_ABOVE_MAXIMUM"
)

// SetStock sets on hand and safety stock to absolute values (a count), idempotently by key.
func (s *Service) SetStock(ctx context.Context, actor *commonv1.Actor, req *inventoryv1.SetStockRequest) (*inventoryv1.StockLevel, *inventoryv1.StockMovement, error) {
	var v rpcerr.Violations
	checkAdminChange(&v, req.GetStoreId(), req.GetSku(), req.GetIdempotencyKey(), req.GetNote())
	if oh := req.GetOnHand(); oh < 0 || oh > maxStockLevel {
		v.Addf("on_hand", "must be between 0 and %d, got %d", maxStockLevel, oh)
	}
	switch ss := req.GetSafetyStock(); {
	case ss < 0 || ss > maxStockLevel:
		v.Addf("safety_stock", "must be between 0 and %d, got %d", maxStockLevel, ss)
	case ss != 0 && req.GetKeepSafetyStock():
		v.Addf("safety_stock", "must be 0 with keep_safety_stock, got %d", ss)
	}
	occurred := checkOccurTime(&v, "occur_time", req.GetOccurTime(), s.clock.Now())
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	var safety *int32
	if !req.GetKeepSafetyStock() {
		safety = &req.SafetyStock
	}
	return s.changeStock(ctx, actor, stockChange{
		storeID: req.GetStoreId(), sku: req.GetSku(), key: req.GetIdempotencyKey(), note: req.GetNote(), kind: kindSet,
		occurred: occurred, requested: req.GetOnHand(), safety: safety,
		apply: func(cur level, later int32, _ bool) (level, string, int32, error) {
			// The count, and what has changed since it was taken.
			target := min(max(int64(req.GetOnHand())+int64(later), 0), maxStockLevel)
			next := level{onHand: int32(target), reserved: cur.reserved, safety: cur.safety}
			if safety != nil {
				next.safety = *safety
			}
			note := ""
			if later != 0 {
				note = strings.TrimSpace(fmt.Sprintf("%s [counted %d at %s; %+d recorded since]", req.GetNote(), req.GetOnHand(),
					occurred.UTC().Format(time.RFC3339), later))
			}
			if next.onHand < cur.reserved {
				if !req.GetClampToReserved() {
					return level{}, "", 0, rpcerr.FailedPreconditionReason(ErrorDomain, ReasonStockBelowReserved, "on_hand: %d would be below the %d units reserved for open orders of %s at %s; release or commit holds first",
						next.onHand, cur.reserved, req.GetSku(), req.GetStoreId())
				}
				short := cur.reserved - next.onHand
				next.onHand = cur.reserved
				return next, shortNote(cmp.Or(note, req.GetNote()), short, cur.reserved), short, nil
			}
			return next, note, 0, nil
		},
		same: func(m *inventoryv1.StockMovement) bool {
			if m.GetKind() != inventoryv1.MovementKind_MOVEMENT_KIND_SET || m.GetSku() != req.GetSku() {
				return false
			}
			// A clamped count left on hand at the reserved units, above the count (movements
			// from before requested was kept say no more).
			counted := m.GetOnHandAfter() == req.GetOnHand() || req.GetClampToReserved() && m.GetOnHandAfter() > req.GetOnHand()
			if m.Requested != nil {
				counted = m.GetRequested() == req.GetOnHand()
			}
			return counted && sameOccurrence(m, occurred) && (req.GetKeepSafetyStock() || m.GetSafetyStockAfter() == req.GetSafetyStock())
		},
	})
}

// AdjustStock changes on hand by a delta with a reason, idempotently by key. A change that
// would take on hand below what is reserved is refused, never applied in part.
func (s *Service) AdjustStock(ctx context.Context, actor *commonv1.Actor, req *inventoryv1.AdjustStockRequest) (*inventoryv1.StockLevel, *inventoryv1.StockMovement, error) {
	var v rpcerr.Violations
	checkAdminChange(&v, req.GetStoreId(), req.GetSku(), req.GetIdempotencyKey(), req.GetNote())
	ak, ok := adjustmentKinds[req.GetReason()]
	d := req.GetDelta()
	switch {
	case !ok:
		v.Addf("reason", "required: DELIVERY, COUNT, IN_STORE_SALE, RETURN or DAMAGE, got %v", req.GetReason())
	case d == 0:
		v.Add("delta", "must not be 0")
	case d > maxStockLevel || d < -maxStockLevel:
		v.Addf("delta", "must be between -%d and %d, got %d", maxStockLevel, maxStockLevel, d)
	case ak.sign > 0 && d < 0:
		v.Addf("delta", "must be positive for %v, got %d", req.GetReason(), d)
	case ak.sign < 0 && d > 0:
		v.Addf("delta", "must be negative for %v, got %d", req.GetReason(), d)
	}
	occurred := checkOccurTime(&v, "occur_time", req.GetOccurTime(), s.clock.Now())
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	return s.changeStock(ctx, actor, stockChange{
		storeID: req.GetStoreId(), sku: req.GetSku(), key: req.GetIdempotencyKey(), note: req.GetNote(), kind: ak.kind,
		occurred: occurred, requested: d,
		apply: func(cur level, _ int32, fresh bool) (level, string, int32, error) {
			next := cur
			next.onHand = cur.onHand + d
			switch {
			case next.onHand < cur.reserved && req.GetClampToReserved() && !fresh:
				// (A SKU never stocked here, its row made by this change, has nothing to take
				// down: refused below, as without clamping. A row at 0 records the change, with
				// what was asked: a count from before it must know it happened.)
				short := cur.reserved - next.onHand
				next.onHand = cur.reserved
				return next, shortNote(req.GetNote(), short, cur.reserved), short, nil
			case next.onHand < 0:
				return level{}, "", 0, rpcerr.FailedPreconditionReason(ErrorDomain, ReasonStockBelowZero, "delta: %d would take on hand of %s at %s below 0 (on hand %d)",
					d, req.GetSku(), req.GetStoreId(), cur.onHand)
			case next.onHand < cur.reserved:
				return level{}, "", 0, rpcerr.FailedPreconditionReason(ErrorDomain, ReasonStockBelowReserved, "delta: %d would take on hand of %s at %s to %d, below the %d units reserved for open orders; release or commit holds first",
					d, req.GetSku(), req.GetStoreId(), next.onHand, cur.reserved)
			case next.onHand > maxStockLevel:
				return level{}, "", 0, rpcerr.FailedPreconditionReason(ErrorDomain, ReasonStockAboveMaximum, "delta: %d would take on hand of %s at %s above %d", d, req.GetSku(), req.GetStoreId(), maxStockLevel)
			}
			return next, "", 0, nil
		},
		same: func(m *inventoryv1.StockMovement) bool {
			// A clamped change moved on hand less far than asked (possibly not at all), and
			// one from before the last count did not move it: what was asked is kept when it
			// differs (movements from before requested was kept say no more).
			delta := m.GetOnHandDelta() == d || req.GetClampToReserved() && d < 0 && m.GetOnHandDelta() > d && m.GetOnHandDelta() <= 0
			if m.Requested != nil {
				delta = m.GetRequested() == d
			}
			return m.GetKind() == movementKinds[ak.kind] && m.GetSku() == req.GetSku() && delta && sameOccurrence(m, occurred)
		},
	})
}

// shortNote is the ledger note of a change shortened to the reserved units: note, and how many
// units the open orders are short.
func shortNote(note string, short, reserved int32) string {
	if reserved == 0 {
		return strings.TrimSpace(fmt.Sprintf("%s [%d units more than on hand: kept at 0; count them]", note, short))
	}
	return strings.TrimSpace(fmt.Sprintf("%s [%d units short: on hand kept at the %d reserved for open orders; settle them]", note, short, reserved))
}

func checkAdminChange(v *rpcerr.Violations, storeID, sku, key, note string) {
	checkStoreID(v, "store_id", storeID)
	checkSKU(v, "sku", sku)
	checkText(v, "idempotency_key", key, maxIDLen, true)
	checkText(v, "note", note, maxNoteLen, false)
}

const movementColumns = `id, store_id, sku, kind, on_hand_delta, reserved_delta, on_hand_after, reserved_after,
	safety_stock_after, actor_kind, actor_id, note, order_id, COALESCE(idempotency_key, ''), create_time,
	COALESCE(stock_version, 0), occur_time, requested`

func scanMovement(row pgx.Row) (*inventoryv1.StockMovement, error) {
	var (
		m        inventoryv1.StockMovement
		kind, ak string
		actorID  string
		at       time.Time
		occurred *time.Time
	)
	if err := row.Scan(&m.Id, &m.StoreId, &m.Sku, &kind, &m.OnHandDelta, &m.ReservedDelta, &m.OnHandAfter, &m.ReservedAfter,
		&m.SafetyStockAfter, &ak, &actorID, &m.Note, &m.OrderId, &m.IdempotencyKey, &at, &m.StockVersion, &occurred, &m.Requested); err != nil {
		return nil, err
	}
	if occurred != nil {
		m.OccurTime = timestamp(*occurred)
	}
	m.Kind = movementKinds[kind]
	m.Actor = &commonv1.Actor{Kind: actorKindProto(ak), Id: actorID}
	m.CreateTime = timestamp(at)
	return &m, nil
}

// levelAfter is the level a movement left behind: a retried request's original result.
func levelAfter(m *inventoryv1.StockMovement) *inventoryv1.StockLevel {
	l := level{onHand: m.GetOnHandAfter(), reserved: m.GetReservedAfter(), safety: m.GetSafetyStockAfter(), version: m.GetStockVersion()}
	return l.proto(stockKey{m.GetStoreId(), m.GetSku()}, m.GetCreateTime().AsTime())
}

func (s *Service) changeStock(ctx context.Context, actor *commonv1.Actor, c stockChange) (*inventoryv1.StockLevel, *inventoryv1.StockMovement, error) {
	var (
		outLevel *inventoryv1.StockLevel
		outMove  *inventoryv1.StockMovement
	)
	attempt := func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1)`, c.storeID).Scan(&exists); err != nil {
			return fmt.Errorf("check store: %w", err)
		}
		if !exists {
			return rpcerr.NotFound("store_id", c.storeID)
		}
		// A retry returns what the first request did, whatever happened since.
		prev, err := scanMovement(tx.QueryRow(ctx, "SELECT "+movementColumns+" FROM movements WHERE store_id = $1 AND idempotency_key = $2", c.storeID, c.key))
		if err == nil {
			if !c.same(prev) {
				return rpcerr.FailedPrecondition("idempotency_key: %q was already used at store %s for a different change (movement %d: %v of %s)",
					c.key, c.storeID, prev.GetId(), prev.GetKind(), prev.GetSku())
			}
			outLevel, outMove = levelAfter(prev), prev
			return nil
		}
		if err != pgx.ErrNoRows {
			return fmt.Errorf("look up idempotency key: %w", err)
		}
		// Make sure the row exists (a first delivery of a SKU), then lock it.
		tag, err := tx.Exec(ctx, `INSERT INTO stock (store_id, sku, on_hand) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING`, c.storeID, c.sku)
		if err != nil {
			return fmt.Errorf("create stock row: %w", err)
		}
		fresh := tag.RowsAffected() == 1
		// A count taken in the past reads the ledger since then, mostly before the row is
		// locked: reserves of a busy SKU wait for its lock.
		var pre ledgerScan
		if c.kind == kindSet && c.occurred != nil {
			if pre, err = changedSince(ctx, tx, c.storeID, c.sku, *c.occurred, 0); err != nil {
				return err
			}
		}
		levels, err := lockLevels(ctx, tx, []stockKey{{c.storeID, c.sku}})
		if err != nil {
			return err
		}
		cur := *levels[stockKey{c.storeID, c.sku}]
		d, err := s.decideChange(ctx, tx, c, cur, pre, fresh)
		if err != nil {
			return err
		}
		next := d.next
		next.version = cur.version + 1
		var occurred, requested any // NULL when the request did not say, or when it is what was done
		if c.occurred != nil {
			occurred = *c.occurred
		}
		if done := next.onHand - cur.onHand; c.kind == kindSet && next.onHand != c.requested || c.kind != kindSet && done != c.requested {
			requested = c.requested
		}
		// A count moves the row's count time forward to when it was taken (now, unless the
		// request said), with what it could not take off; a count from before the last one
		// leaves them. A correction found by counting (COUNT: what was found less on hand as
		// Handoff shows it) measures the shelf again, as a count does: what it could not take
		// off replaces what the count before it could not. A count is taken no later than it
		// is recorded: one dated ahead (a clock running fast) would otherwise pass every sale
		// until then as in it already.
		if _, err := tx.Exec(ctx, `UPDATE stock SET on_hand = $3, safety_stock = $4, update_time = now(), version = $5,
				count_time = CASE WHEN $6 THEN greatest(count_time, least(coalesce($7::timestamptz, now()), now())) ELSE count_time END,
				count_short = CASE WHEN $6 THEN $8 ELSE count_short END
			WHERE store_id = $1 AND sku = $2`,
			c.storeID, c.sku, next.onHand, next.safety, next.version, d.counts, occurred, d.short); err != nil {
			return fmt.Errorf("update stock: %w", err)
		}
		outMove, err = scanMovement(tx.QueryRow(ctx, `INSERT INTO movements (store_id, sku, kind, on_hand_delta, reserved_delta,
				on_hand_after, reserved_after, safety_stock_after, actor_kind, actor_id, note, idempotency_key, stock_version, occur_time,
				requested)
			VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
			RETURNING `+movementColumns,
			c.storeID, c.sku, c.kind, next.onHand-cur.onHand, next.onHand, next.reserved, next.safety,
			actorKinds[actor.GetKind()], actor.GetId(), cmp.Or(d.note, c.note), c.key, next.version, occurred, requested))
		if err != nil {
			return fmt.Errorf("record movement: %w", err)
		}
		outLevel = next.proto(stockKey{c.storeID, c.sku}, outMove.GetCreateTime().AsTime())
		_, err = outbox.Enqueue(ctx, tx, SubjectStockChanged, &inventoryv1.StockLevelChanged{Level: outLevel, Kind: movementKinds[c.kind]})
		return err
	}
	var err error
	for range 3 {
		err = s.inTx(ctx, attempt)
		// Two requests with one key at once: the loser hits the unique key; rerun, and it
		// finds the winner's movement.
		if code, constraint := pgCode(err); code != codeUniqueViolation || constraint != "movements_idempotency" {
			break
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return outLevel, outMove, nil
}

// stockPosition is the keyset position of ListStock pages.
type stockPosition struct {
	SKU string `json:"s"`
}

// ListStock pages through a store's stock levels by SKU.
func (s *Service) ListStock(ctx context.Context, req *inventoryv1.ListStockRequest) (*inventoryv1.ListStockResponse, error) {
	var v rpcerr.Violations
	checkStoreID(&v, "store_id", req.GetStoreId())
	if len(req.GetSkus()) > maxAvailabilitySK {
		v.Addf("skus", "at most %d, got %d", maxAvailabilitySK, len(req.GetSkus()))
	}
	for i, sku := range req.GetSkus() {
		checkSKU(&v, fmt.Sprintf("skus[%d]", i), sku)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	size, err := pagetoken.PageSize(req.GetPageSize(), 100, 500)
	if err != nil {
		return nil, err
	}
	var after stockPosition
	if _, err := pagetoken.Decode(req, &after); err != nil {
		return nil, err
	}
	if err := s.requireStore(ctx, req.GetStoreId()); err != nil {
		return nil, err
	}
	skus := req.GetSkus()
	rows, err := s.db.Query(ctx, `SELECT sku, on_hand, reserved, safety_stock, update_time, version FROM stock
		WHERE store_id = $1 AND sku > $2 AND (cardinality($3::text[]) = 0 OR sku = ANY($3))
		ORDER BY sku LIMIT $4`, req.GetStoreId(), after.SKU, nonNil(skus), size+1)
	if err != nil {
		return nil, fmt.Errorf("list stock: %w", err)
	}
	levels, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*inventoryv1.StockLevel, error) {
		var (
			sku string
			l   level
			at  time.Time
		)
		if err := r.Scan(&sku, &l.onHand, &l.reserved, &l.safety, &at, &l.version); err != nil {
			return nil, err
		}
		return l.proto(stockKey{req.GetStoreId(), sku}, at), nil
	})
	if err != nil {
		return nil, fmt.Errorf("list stock: %w", err)
	}
	res := &inventoryv1.ListStockResponse{Levels: levels}
	if len(levels) > size {
		res.Levels = levels[:size]
		res.NextPageToken = pagetoken.Encode(req, stockPosition{SKU: res.Levels[size-1].GetSku()})
	}
	return res, nil
}

// movementPosition is the keyset position of ListMovements pages (newest first).
type movementPosition struct {
	ID int64 `json:"i"`
}

// ListMovements pages through a store's ledger, newest first, optionally for one SKU.
func (s *Service) ListMovements(ctx context.Context, req *inventoryv1.ListMovementsRequest) (*inventoryv1.ListMovementsResponse, error) {
	var v rpcerr.Violations
	checkStoreID(&v, "store_id", req.GetStoreId())
	if req.GetSku() != "" {
		checkSKU(&v, "sku", req.GetSku())
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	size, err := pagetoken.PageSize(req.GetPageSize(), 100, 500)
	if err != nil {
		return nil, err
	}
	after := movementPosition{ID: 1<<63 - 1}
	if _, err := pagetoken.Decode(req, &after); err != nil {
		return nil, err
	}
	if err := s.requireStore(ctx, req.GetStoreId()); err != nil {
		return nil, err
	}
	sql := "SELECT " + movementColumns + " FROM movements WHERE store_id = $1 AND id < $2"
	args := []any{req.GetStoreId(), after.ID, size + 1}
	if req.GetSku() != "" {
		sql += " AND sku = $4"
		args = append(args, req.GetSku())
	}
	rows, err := s.db.Query(ctx, sql+" ORDER BY id DESC LIMIT $3", args...)
	if err != nil {
		return nil, fmt.Errorf("list movements: %w", err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*inventoryv1.StockMovement, error) { return scanMovement(r) })
	if err != nil {
		return nil, fmt.Errorf("list movements: %w", err)
	}
	res := &inventoryv1.ListMovementsResponse{Movements: ms}
	if len(ms) > size {
		res.Movements = ms[:size]
		res.NextPageToken = pagetoken.Encode(req, movementPosition{ID: res.Movements[size-1].GetId()})
	}
	return res, nil
}

// GetAvailability says how many of each SKU a store can promise now, in request order;
// a SKU the store does not stock reports 0.
func (s *Service) GetAvailability(ctx context.Context, storeID string, skus []string) (*inventoryv1.GetAvailabilityResponse, error) {
	var v rpcerr.Violations
	checkStoreID(&v, "store_id", storeID)
	switch n := len(skus); {
	case n == 0:
		v.Add("skus", "at least one SKU is required")
	case n > maxAvailabilitySK:
		v.Addf("skus", "at most %d, got %d", maxAvailabilitySK, n)
	}
	for i, sku := range skus {
		checkSKU(&v, fmt.Sprintf("skus[%d]", i), sku)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT s.sku, s.on_hand, s.reserved, s.safety_stock
		FROM stores st LEFT JOIN stock s ON s.store_id = st.id AND s.sku = ANY($2)
		WHERE st.id = $1`, storeID, skus)
	if err != nil {
		return nil, fmt.Errorf("get availability: %w", err)
	}
	found := false
	avail := map[string]int32{}
	for rows.Next() {
		found = true
		var (
			sku *string
			l   level
			oh  *int32
			rs  *int32
			ss  *int32
		)
		if err := rows.Scan(&sku, &oh, &rs, &ss); err != nil {
			rows.Close()
			return nil, fmt.Errorf("get availability: %w", err)
		}
		if sku != nil {
			l = level{onHand: *oh, reserved: *rs, safety: *ss}
			avail[*sku] = l.available()
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("get availability: %w", err)
	}
	if !found {
		return nil, rpcerr.NotFound("store_id", storeID)
	}
	res := &inventoryv1.GetAvailabilityResponse{StoreId: storeID}
	for _, sku := range skus {
		res.Availability = append(res.Availability, &inventoryv1.SkuAvailability{Sku: sku, Available: avail[sku]})
	}
	return res, nil
}

func (s *Service) requireStore(ctx context.Context, id string) error {
	var exists bool
	if err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1)`, id).Scan(&exists); err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	if !exists {
		return rpcerr.NotFound("store_id", id)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
