package inventory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Stored hold states.
const (
	holdOpen      = "open"
	holdCommitted = "committed"
	holdReleased  = "released"
	holdExpired   = "expired"
)

var holdStates = map[string]inventoryv1.HoldState{
	holdOpen:      inventoryv1.HoldState_HOLD_STATE_OPEN,
	holdCommitted: inventoryv1.HoldState_HOLD_STATE_COMMITTED,
	holdReleased:  inventoryv1.HoldState_HOLD_STATE_RELEASED,
	holdExpired:   inventoryv1.HoldState_HOLD_STATE_EXPIRED,
}

// hold is a holds row.
type hold struct {
	id, orderID, lineID string
	key                 stockKey
	quantity            int32
	state               string
	expireTime          time.Time
	// storeVersion is the store's version the reserve decided on (see Hold.store_version).
	storeVersion int64
	// createTime is when it was placed: its goods cannot have left the store before.
	createTime time.Time
}

const holdColumns = `id::text, order_id, line_id, store_id, sku, quantity, state, expire_time, store_version, create_time`

func scanHolds(rows pgx.Rows) ([]*hold, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*hold, error) {
		var h hold
		err := r.Scan(&h.id, &h.orderID, &h.lineID, &h.key.store, &h.key.sku, &h.quantity, &h.state, &h.expireTime, &h.storeVersion, &h.createTime)
		return &h, err
	})
}

func (h *hold) proto() *inventoryv1.Hold {
	return &inventoryv1.Hold{HoldId: h.id, OrderId: h.orderID, LineId: h.lineID, StoreId: h.key.store, Sku: h.key.sku,
		Quantity: h.quantity, State: holdStates[h.state], ExpireTime: timestamp(h.expireTime), StoreVersion: h.storeVersion}
}

func holdsProto(hs []*hold) []*inventoryv1.Hold {
	out := make([]*inventoryv1.Hold, len(hs))
	for i, h := range hs {
		out[i] = h.proto()
	}
	return out
}

// lineTotal is what an order asks of one SKU: its lines summed.
type lineTotal struct {
	sku      string
	quantity int32
}

// reserveRequest is a validated ReserveHoldsRequest.
type reserveRequest struct {
	orderID string
	storeID string // empty: nearest store that can fill it
	near    *commonv1.LatLng
	radius  float64
	lines   []*inventoryv1.HoldLine
	totals  []lineTotal // same-SKU lines summed, in order of first appearance
	expire  time.Time
}

func (s *Service) validateReserve(req *inventoryv1.ReserveHoldsRequest, now time.Time) (*reserveRequest, error) {
	var v rpcerr.Violations
	r := &reserveRequest{orderID: req.GetOrderId(), storeID: req.GetStoreId(), near: req.GetNear()}
	checkText(&v, "order_id", r.orderID, maxIDLen, true)
	switch n := len(req.GetLines()); {
	case n == 0:
		v.Add("lines", "at least one line is required")
	case n > maxOrderLines:
		v.Addf("lines", "at most %d lines, got %d", maxOrderLines, n)
	}
	seenLine := map[string]int{}
	totalIdx := map[string]int{}
	for i, l := range req.GetLines() {
		f := fmt.Sprintf("lines[%d]", i)
		checkText(&v, f+".line_id", l.GetLineId(), maxIDLen, true)
		if j, dup := seenLine[l.GetLineId()]; dup && l.GetLineId() != "" {
			v.Addf(f+".line_id", "%q repeats lines[%d]: one hold per order line", rpcerr.Echo(l.GetLineId()), j)
		}
		seenLine[l.GetLineId()] = i
		checkSKU(&v, f+".sku", l.GetSku())
		if q := l.GetQuantity(); q < 1 || q > maxLineQuantity {
			v.Addf(f+".quantity", "must be between 1 and %d, got %d", maxLineQuantity, q)
		}
		if j, ok := totalIdx[l.GetSku()]; ok {
			r.totals[j].quantity += l.GetQuantity()
		} else {
			totalIdx[l.GetSku()] = len(r.totals)
			r.totals = append(r.totals, lineTotal{sku: l.GetSku(), quantity: l.GetQuantity()})
		}
	}
	r.lines = req.GetLines()
	if r.storeID != "" {
		checkStoreID(&v, "store_id", r.storeID)
	} else {
		if r.near == nil {
			v.Add("near", "required when store_id is empty")
		} else {
			checkLatLng(&v, "near", r.near)
		}
		r.radius = checkRadius(&v, "radius_meters", req.GetRadiusMeters())
	}
	// Postgres keeps microseconds: answer with the deadline as stored, so a retry's answer
	// equals the first one.
	r.expire = checkDeadline(&v, "expire_time", req.GetExpireTime(), now, now.Add(s.cfg.DefaultHoldTTL)).Truncate(time.Microsecond)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return r, nil
}

// checkDeadline reads a hold deadline: in the future and at most maxHoldTTL away; def when unset.
func checkDeadline(v *rpcerr.Violations, field string, ts *timestamppb.Timestamp, now, def time.Time) time.Time {
	if ts == nil {
		if def.IsZero() {
			v.Add(field, "required")
		}
		return def
	}
	if err := ts.CheckValid(); err != nil {
		v.Add(field, "invalid timestamp: "+err.Error())
		return def
	}
	t := ts.AsTime()
	switch {
	case !t.After(now):
		v.Addf(field, "must be in the future, got %s (now %s)", t.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case t.After(now.Add(maxHoldTTL)):
		v.Addf(field, "must be at most %v ahead, got %s", maxHoldTTL, t.Format(time.RFC3339))
	}
	return t
}

// ReserveHolds holds every line of an order at one store, all or nothing, idempotent by order
// id. Out of stock and an unavailable store are answers (outcomes), not errors; malformed
// input and an unknown store are errors.
func (s *Service) ReserveHolds(ctx context.Context, req *inventoryv1.ReserveHoldsRequest) (*inventoryv1.ReserveHoldsResponse, error) {
	r, err := s.validateReserve(req, s.clock.Now())
	if err != nil {
		return nil, err
	}
	if r.storeID != "" {
		return s.res.submit(ctx, r)
	}
	return s.reserveNearest(ctx, r)
}

// maxNearestAttempts bounds how many stores one nearest-store reserve tries to lock.
const maxNearestAttempts = 5

// reserveNearest holds the order at the nearest store within the radius that accepts orders
// and can fill every line. Candidates come from the store cache and their stock from one
// unlocked read (more only when the nearest few cannot fill it); they are then tried in order
// of distance through the same locked path as a named store, so a store that lost its stock in
// between is skipped. With no store able to fill it, the answer carries the nearest accepting
// store's shortages.
//
// A retry of an order already held needs no read of its own: the locked path finds the
// order's holds wherever they are and answers with them. Only when the answer would be "not
// reserved" are the order's holds looked up (it may have been held at a store that has closed
// or sold out since).
func (s *Service) reserveNearest(ctx context.Context, r *reserveRequest) (*inventoryv1.ReserveHoldsResponse, error) {
	res, nearest, shortages, looked, err := s.tryNearest(ctx, r)
	if res != nil || err != nil {
		return res, err
	}
	// Not reserved: the stores in the radius may have changed at another copy since the
	// cache heard (a store resumed is not a candidate until it does). Only a rejection pays
	// for the check, and the scan runs again only when it found a change.
	if changed, err := s.stores.recheckWithin(ctx, r.near.GetLatitude(), r.near.GetLongitude(), r.radius); err != nil {
		return nil, err
	} else if changed {
		if res, nearest, shortages, looked, err = s.tryNearest(ctx, r); res != nil || err != nil {
			return res, err
		}
	}
	existing, err := s.orderHolds(ctx, r.orderID)
	if err != nil {
		return nil, err
	}
	if len(existing) > 0 {
		a := existingAnswer(existing, r.lines)
		return a.res, a.err
	}
	if nearest == nil {
		return &inventoryv1.ReserveHoldsResponse{
			Outcome: inventoryv1.ReserveOutcome_RESERVE_OUTCOME_STORE_UNAVAILABLE,
			Message: fmt.Sprintf("no store within %.0f m of (%.5f, %.5f) takes orders now", r.radius, r.near.GetLatitude(), r.near.GetLongitude()),
		}, nil
	}
	which := fmt.Sprintf("no store within %.0f m", r.radius)
	if looked > 0 {
		which = fmt.Sprintf("none of the %d nearest stores taking orders within %.0f m", looked, r.radius)
	}
	return &inventoryv1.ReserveHoldsResponse{
		Outcome:   inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK,
		Shortages: shortages,
		Message: fmt.Sprintf("%s can fill every line; the nearest, %s, is short of %s",
			which, nearest.st.row.id, describeShortages(shortages)),
	}, nil
}

// tryNearest tries the candidates of reserveNearest, nearest first, and returns the answer of
// the first that holds the order, or, with none, the nearest store taking orders and what it
// is short of (nil: none takes orders), and how many stores were looked at when the scan
// stopped at its budget with more in the radius (0: it looked at them all). A candidate the
// locked reserve finds not taking orders (paused, closed, past its last orders since the cache
// read it) is no candidate: the next one is the nearest.
func (s *Service) tryNearest(ctx context.Context, r *reserveRequest) (reserved *inventoryv1.ReserveHoldsResponse, nearest *located, shortages []*inventoryv1.Shortage, looked int, err error) {
	q := locatorQuery{center: r.near, radius: r.radius, totals: r.totals, maxResults: maxNearestAttempts, onlyFillable: true}
	sc, err := s.scanStores(ctx, q, time.Now())
	if err != nil {
		return nil, nil, nil, 0, err
	}
	defer func() {
		if sc.cut {
			looked = sc.checked
		}
	}()
	var attempts int
	for attempts < maxNearestAttempts {
		chunk, err := sc.next(ctx, maxNearestAttempts-attempts)
		if err != nil {
			return nil, nil, nil, 0, err
		}
		if chunk == nil {
			break
		}
		for _, m := range chunk {
			if nearest == nil {
				nearest, shortages = m, m.shortages(r.totals)
			}
			if !m.fills || attempts == maxNearestAttempts {
				continue
			}
			attempts++
			at := *r
			at.storeID = m.st.row.id
			res, err := s.res.submit(ctx, &at)
			if err != nil {
				return nil, nil, nil, 0, err
			}
			switch res.GetOutcome() {
			case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
				return res, nil, nil, 0, nil
			case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK:
				if m == nearest {
					shortages = res.GetShortages() // fresher than the unlocked read
				}
			case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_STORE_UNAVAILABLE:
				if m == nearest {
					nearest, shortages = nil, nil // the next one taking orders is the nearest
				}
			}
		}
	}
	return nil, nearest, shortages, 0, nil
}

func describeShortages(sh []*inventoryv1.Shortage) string {
	parts := make([]string, len(sh))
	for i, x := range sh {
		parts[i] = fmt.Sprintf("%s (requested %d, available %d)", x.GetSku(), x.GetRequested(), x.GetAvailable())
	}
	return strings.Join(parts, ", ")
}

// existingAnswer answers a reserve for an order that already has holds hs: with them when the
// request asks for the same lines (a retry), else refused. A reserve is idempotent by order id,
// so a changed request under an old id (a checkout's lines edited and its idempotency key used
// again) must not be answered with holds for other lines: its order would be confirmed with
// nothing held for the lines it has.
func existingAnswer(hs []*hold, lines []*inventoryv1.HoldLine) reserveAnswer {
	type line struct {
		id, sku string
		qty     int32
	}
	held := make([]line, len(hs))
	for i, h := range hs {
		held[i] = line{h.lineID, h.key.sku, h.quantity}
	}
	asked := make([]line, len(lines))
	for i, l := range lines {
		asked[i] = line{l.GetLineId(), l.GetSku(), l.GetQuantity()}
	}
	byID := func(a, b line) int { return strings.Compare(a.id, b.id) }
	slices.SortFunc(held, byID)
	slices.SortFunc(asked, byID)
	if !slices.Equal(held, asked) {
		return reserveAnswer{err: rpcerr.FailedPrecondition(
			"order %q already holds stock for other lines; a changed checkout needs a new idempotency key", hs[0].orderID)}
	}
	return reserveAnswer{res: reservedResponse(hs)}
}

// reservedResponse answers with an order's holds, in line id order (byte order, not the
// database's collation, so that a first answer and a retry's answer are identical).
func reservedResponse(hs []*hold) *inventoryv1.ReserveHoldsResponse {
	hs = slices.Clone(hs)
	slices.SortFunc(hs, func(a, b *hold) int { return strings.Compare(a.lineID, b.lineID) })
	return &inventoryv1.ReserveHoldsResponse{
		Outcome: inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED,
		StoreId: hs[0].key.store,
		Holds:   holdsProto(hs),
	}
}

// orderHolds returns every hold of an order, in line order.
func (s *Service) orderHolds(ctx context.Context, orderID string) ([]*hold, error) {
	rows, err := s.db.Query(ctx, "SELECT "+holdColumns+" FROM holds WHERE order_id = $1 ORDER BY line_id", orderID)
	if err != nil {
		return nil, fmt.Errorf("read order holds: %w", err)
	}
	hs, err := scanHolds(rows)
	if err != nil {
		return nil, fmt.Errorf("read order holds: %w", err)
	}
	return hs, nil
}

// ReleaseHolds gives back an order's open holds (all, or one line's). A retry, or an order
// without open holds, releases nothing and returns an empty list.
func (s *Service) ReleaseHolds(ctx context.Context, orderID, lineID string, reason inventoryv1.ReleaseReason) ([]*inventoryv1.Hold, error) {
	var v rpcerr.Violations
	checkRelease(&v, "", orderID, lineID, reason)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return s.changeOne(ctx, holdChange{kind: changeRelease, orderID: orderID, lineID: lineID, reason: reason})
}

// CommitHolds turns an order's open holds into a sale: on hand and reserved fall together.
// Holds of the order that expired before it came are sold late (holdEnds.addLateSales). A
// retry commits nothing and returns an empty answer.
func (s *Service) CommitHolds(ctx context.Context, req *inventoryv1.CommitHoldsRequest) (*inventoryv1.CommitHoldsResponse, error) {
	var v rpcerr.Violations
	c := checkCommit(&v, "", req, s.clock.Now())
	if err := v.Err(); err != nil {
		return nil, err
	}
	done, err := s.changeHoldsWithRetry(ctx, []holdChange{c})
	if err != nil {
		return nil, err
	}
	r := changeResult(done[0])
	return &inventoryv1.CommitHoldsResponse{Committed: r.GetHolds(), SoldLate: r.GetSoldLate()}, nil
}

// changeOne makes one order's change the way ChangeHolds makes many.
func (s *Service) changeOne(ctx context.Context, c holdChange) ([]*inventoryv1.Hold, error) {
	done, err := s.changeHoldsWithRetry(ctx, []holdChange{c})
	if err != nil {
		return nil, err
	}
	return holdsProto(done[0]), nil
}

// endHolds ends holds that tx has locked and found open: their state, the stock they held
// (reserved down; on hand down too for a sale), one ledger row each, and the events, in one
// round trip after the stock rows are locked.
func (s *Service) endHolds(ctx context.Context, tx pgx.Tx, hs []*hold, state string, reason inventoryv1.ReleaseReason, actor *commonv1.Actor) error {
	if len(hs) == 0 {
		return nil
	}
	keys := make([]stockKey, len(hs))
	for i, h := range hs {
		keys[i] = h.key
	}
	levels, err := lockLevels(ctx, tx, sortedKeys(keys))
	if err != nil {
		return err
	}
	var ends holdEnds
	p := s.newPipeline()
	if err := ends.add(&p, levels, hs, state, reason, actor); err != nil {
		return err
	}
	if err := ends.queue(&p, levels, time.Now()); err != nil {
		return err
	}
	return p.run(ctx, tx)
}

// ExtendHolds moves the deadline of an order's open holds later (never earlier: an extension
// delivered late or again must not undo a later one and free stock a ready order still needs)
// and returns them.
func (s *Service) ExtendHolds(ctx context.Context, orderID string, expire *timestamppb.Timestamp) ([]*inventoryv1.Hold, error) {
	var v rpcerr.Violations
	checkText(&v, "order_id", orderID, maxIDLen, true)
	t := checkDeadline(&v, "expire_time", expire, s.clock.Now(), time.Time{}).Truncate(time.Microsecond)
	if err := v.Err(); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `UPDATE holds SET expire_time = greatest(expire_time, $2) WHERE order_id = $1 AND state = 'open'
		RETURNING `+holdColumns, orderID, t)
	if err != nil {
		return nil, fmt.Errorf("extend holds: %w", err)
	}
	hs, err := scanHolds(rows)
	if err != nil {
		return nil, fmt.Errorf("extend holds: %w", err)
	}
	return holdsProto(hs), nil
}

// SweepExpiredHolds releases every open hold past its deadline, in batches, and returns how
// many it released. Rows another sweeper has locked are skipped (SKIP LOCKED) and the state
// guard makes a hold end once, so copies may sweep side by side. Run calls it periodically.
func (s *Service) SweepExpiredHolds(ctx context.Context) (int, error) {
	total := 0
	for {
		var n int
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "SELECT "+holdColumns+` FROM holds
				WHERE state = 'open' AND expire_time <= now()
				ORDER BY expire_time LIMIT $1
				FOR UPDATE SKIP LOCKED`, s.cfg.SweepBatch)
			if err != nil {
				return fmt.Errorf("find expired holds: %w", err)
			}
			hs, err := scanHolds(rows)
			if err != nil {
				return fmt.Errorf("find expired holds: %w", err)
			}
			n = len(hs)
			return s.endHolds(ctx, tx, hs, holdExpired, inventoryv1.ReleaseReason_RELEASE_REASON_DEADLINE_PASSED, actorSweeper)
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < s.cfg.SweepBatch {
			return total, nil
		}
	}
}
