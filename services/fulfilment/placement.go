package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/orderkey"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// sagaActor is the checkout saga in order histories.
var sagaActor = systemActor("checkout")

// OrderID is the id of the order that a customer's checkout with idempotency key creates
// (orderkey.OrderID).
func OrderID(customerID, idempotencyKey string) string {
	return orderkey.OrderID(customerID, idempotencyKey)
}

// settleTimeout bounds writing an order once inventory has answered: the holds exist by then,
// so the order is written even if the caller has stopped waiting.
const settleTimeout = 5 * time.Second

// PlaceOrder creates the order of a checkout and drives it to CONFIRMED or REJECTED (see the
// package documentation for the saga). A retry with the same key returns the same order.
// The order comes back with its pickup code: the caller acts for the order's own shopper.
func (s *Service) PlaceOrder(ctx context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.Order, error) {
	if err := validatePlaceOrder(req); err != nil {
		return nil, err
	}
	id := OrderID(req.GetCustomerId(), req.GetIdempotencyKey())
	// Concurrent copies of one checkout in this process share one attempt; across processes
	// the idempotent reserve and the unique key keep them to one order.
	v, err, _ := s.placing.Do(id, func() (any, error) { return s.place(ctx, id, req) })
	if err != nil {
		return nil, err
	}
	o := v.(*order)
	if o.CartID != req.GetCartId() {
		// The key names another checkout, of another cart: its order is not this one's, and
		// answering with it would mark this cart checked out as an order of other lines.
		return nil, rpcerr.FailedPrecondition("idempotency_key %q was used for the checkout of another cart; check this cart out with a new key", req.GetIdempotencyKey())
	}
	if !o.sameLines(req.GetLines()) {
		// The cart was edited since its checkout under this key (rejected, say): its order is
		// of the lines as they were, and answering with it would report on lines no longer in
		// the cart. What this attempt's reserve held, existing gave back.
		return nil, rpcerr.FailedPrecondition("idempotency_key %q was used for a checkout of other lines (the cart has changed since); check out with a new key", req.GetIdempotencyKey())
	}
	if o.RequestedPickup != "" && o.RequestedPickup != requestedPickup(req) {
		// Likewise for the pickup: a rejection at the store asked before says nothing of the
		// store asked now.
		return nil, rpcerr.FailedPrecondition("idempotency_key %q was used for a checkout with another pickup (the cart has changed since); check out with a new key", req.GetIdempotencyKey())
	}
	return o.proto(viewOwner, s.secret), nil
}

// requestedPickup is the pickup req asks for, as orders.requested_pickup keeps it: its store,
// or its point and radius.
func requestedPickup(req *fulfilmentv1.PlaceOrderRequest) string {
	if id := req.GetStoreId(); id != "" {
		return "store:" + id
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	return "near:" + f(req.GetNear().GetLatitude()) + "," + f(req.GetNear().GetLongitude()) + "," + f(req.GetRadiusMeters())
}

// sameLines reports whether the order was placed for exactly these lines: the same line ids,
// SKUs and quantities, in any order.
func (o *order) sameLines(lines []*fulfilmentv1.PlaceOrderLine) bool {
	if len(lines) != len(o.Lines) {
		return false
	}
	for _, l := range lines {
		if !slices.ContainsFunc(o.Lines, func(ol orderLine) bool {
			return ol.ID == l.GetLineId() && ol.SKU == l.GetSku() && ol.Quantity == l.GetQuantity()
		}) {
			return false
		}
	}
	return true
}

// FindCheckoutOrder returns the order the checkout of customerID's cart cartID with key made,
// as its customer sees it (pickup code included), or NotFound when it made none (an order of
// another cart under the key is not this checkout's). It places nothing: the cart asks it to
// settle a checkout that got no answer in time.
func (s *Service) FindCheckoutOrder(ctx context.Context, customerID, key, cartID string) (*fulfilmentv1.Order, error) {
	var v rpcerr.Violations
	if customerID == "" {
		v.Add("customer_id", "required")
	}
	if key == "" {
		v.Add("idempotency_key", "required")
	}
	if cartID == "" {
		v.Add("cart_id", "required")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	id := OrderID(customerID, key)
	o, err := readOrder(ctx, s.db, id, 0)
	if err != nil {
		return nil, fmt.Errorf("read order %s: %w", id, err)
	}
	if o == nil || o.CartID != cartID {
		return nil, rpcerr.NotFound("order", id)
	}
	return o.proto(viewOwner, s.secret), nil
}

func (s *Service) place(ctx context.Context, id string, req *fulfilmentv1.PlaceOrderRequest) (*order, error) {
	// A retry is answered from its order without reserving again, and a key used before for
	// another cart or other lines is refused (PlaceOrder) before anything is held for it:
	// reserving first held the other lines for a moment, enough to turn another shopper's
	// checkout of the last unit away, and left them in inventory's ledger. One round trip by
	// key (readOrder gives nil where there is no order); a retry racing its first attempt past
	// it is still answered by the idempotent reserve and the insert that finds the order.
	if o, err := readOrder(ctx, s.db, id, 0); err != nil {
		return nil, fmt.Errorf("look for order %s: %w", id, err)
	} else if o != nil {
		return s.existing(ctx, o, heldNothing)
	}
	now := s.clock.NowOrRead(ctx, s.db)
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReserveTimeout)
	res, err := s.inv.reserve(rctx, s.holdRequest(id, req, now))
	cancel()
	failpoint(failpointAfterReserve)

	// From here on the holds may exist: finish writing the order even if the caller gives up.
	ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err != nil {
		if !uncertain(err) {
			// Refused (unknown store, bad SKU): nothing was held. A retry of an order placed
			// earlier (its store since removed, say) still gets that order.
			if o, lerr := readOrder(ctx, s.db, id, 0); lerr == nil && o != nil {
				return s.existing(ctx, o, heldNothing)
			}
			return nil, err
		}
		return s.placePending(ctx, id, req, now, heldUncertain, "reservation not settled yet: "+natsrpc.Message(err), err)
	}
	var store storeInfo
	storeGen := s.stores.generation()
	if res.GetOutcome() == inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		if store, err = s.stores.get(ctx, res.GetStoreId(), heldVersion(res)); err != nil {
			return s.placePending(ctx, id, req, now, heldReserved, "store details not available yet: "+natsrpc.Message(err), err)
		}
	}
	o := newOrder(id, req)
	changes := []change{o.created(sagaActor, "placed", now)}
	ahead := 0
	if res.GetOutcome() == inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		if ahead, err = s.queueAhead(ctx, nil, res.GetStoreId()); err != nil {
			return nil, err // the short holds end by themselves; a retry finds them again
		}
	}
	settled, err := s.settle(o, res, store, ahead, now, s.clock.NowOrRead(ctx, s.db))
	if err != nil {
		return nil, err
	}
	changes = append(changes, settled...)
	// One round trip, one implicit transaction (shared with concurrent checkouts'): the order,
	// its history, event, notification and the extension of its holds, or nothing.
	var w writeBatch
	effects, err := s.write(ctx, &w, o, changes, true, now)
	if err == nil {
		err = s.sendPlacement(ctx, &w)
	}
	if isOrderConflict(err) {
		// A retry, or another copy of this checkout (another process, or PENDING from an
		// earlier attempt), wrote the order first.
		existing, err := readOrder(ctx, s.db, id, 0)
		if err != nil || existing == nil {
			return nil, errors.Join(err, fmt.Errorf("order %s vanished after a conflicting insert", id))
		}
		held := heldNothing
		if res.GetOutcome() == inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			held = heldReserved
		}
		return s.existing(ctx, existing, held)
	}
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		o.History = append(o.History, c.entry)
	}
	s.afterCommit(o, changes, effects)
	s.recountIfStoreChanged(ctx, o, storeGen)
	return o, nil
}

// heldVersion is the store version res's holds were placed against (the newest of them): the
// order's deadlines are counted in hours at least that new.
func heldVersion(res *inventoryv1.ReserveHoldsResponse) int64 {
	var v int64
	for _, h := range res.GetHolds() {
		v = max(v, h.GetStoreVersion())
	}
	return v
}

// holding is what a checkout's own reserve may have left held.
type holding int

const (
	heldNothing   holding = iota // refused, or not enough stock
	heldReserved                 // RESERVED
	heldUncertain                // no answer: a reserve may still land
)

// existing returns an order found for a checkout (read with its history), first driving it on
// if it is PENDING (unless the recovery loop has it in hand right now). held is what the
// checkout's own reserve may hold: if the order has ended without holding anything (REJECTED
// when the stock was short, which the retry's reserve may now have held), that is released,
// at once when it is held and once it has landed when that is not known.
func (s *Service) existing(ctx context.Context, o *order, held holding) (*order, error) {
	switch {
	case o.State == domain.Pending:
		driven, err := s.drivePendingOrder(ctx, o.ID)
		if err != nil {
			s.log.Warn("driving a pending order on failed; the recovery loop will", "order_id", o.ID, "err", err)
		} else if driven != nil {
			return driven, nil
		}
	case held == heldReserved && domain.Final(o.State) && o.State != domain.Collected:
		if err := releaseAfter(ctx, s.db, o.ID, domain.Reject, 0); err != nil {
			return nil, err
		}
		s.afterCommit(o, nil, true)
	case held == heldUncertain && domain.Final(o.State) && o.State != domain.Collected:
		if err := releaseAfter(ctx, s.db, o.ID, domain.Reject, s.lateReserve()); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// newOrder is the order a checkout describes, before anything happened to it.
func newOrder(id string, req *fulfilmentv1.PlaceOrderRequest) *order {
	o := &order{
		ID:             id,
		CustomerID:     req.GetCustomerId(),
		IdempotencyKey: req.GetIdempotencyKey(),
		CartID:         req.GetCartId(),
		CustomerNote:   req.GetCustomerNote(),
		PickupName:     req.GetPickupName(),
		Email:          req.GetEmail(),
		Currency:       req.GetLines()[0].GetUnitPrice().GetCurrencyCode(),

		RequestedPickup: requestedPickup(req),
	}
	for _, l := range req.GetLines() {
		o.Lines = append(o.Lines, orderLine{
			ID: l.GetLineId(), SKU: l.GetSku(), Product: l.GetProductName(), Variant: l.GetVariantName(),
			Quantity: l.GetQuantity(), UnitMinor: l.GetUnitPrice().GetAmountMinor(),
		})
	}
	return o
}

// holdRequest asks inventory to hold the order's lines until a short deadline, which is
// extended once the order is confirmed (see keepHolds).
func (s *Service) holdRequest(id string, req *fulfilmentv1.PlaceOrderRequest, now time.Time) *inventoryv1.ReserveHoldsRequest {
	hr := &inventoryv1.ReserveHoldsRequest{
		OrderId:      id,
		StoreId:      req.GetStoreId(),
		Near:         req.GetNear(),
		RadiusMeters: req.GetRadiusMeters(),
		ExpireTime:   timestamppb.New(now.Add(s.cfg.PlacementHoldTTL)),
	}
	for _, l := range req.GetLines() {
		hr.Lines = append(hr.Lines, &inventoryv1.HoldLine{LineId: l.GetLineId(), Sku: l.GetSku(), Quantity: l.GetQuantity()})
	}
	return hr
}

// queueCounts keeps each store's queue (orders CONFIRMED or PREPARING, counted up to the
// ready-by estimate's cap) for Config.QueueCountTTL: every checkout needs it, and an estimate
// that far behind is as good. Confirmations of this process count on top until the next read,
// so consecutive checkouts at one store through one copy still queue up behind each other.
//
// Those of other copies do not: each copy sees only its own until its next read, so with N
// copies sharing a store's checkouts a burst within QueueCountTTL is under-counted (each copy
// counts about 1/N of it) and its orders are estimated ready, and abandoned if never accepted
// (domain.AbandonAt), up to that many prep times early, as the cap (ReadyByQueueCap) already
// makes them for longer queues. Not fixed: other copies' confirmations reach this one as order
// events only after the outbox relay's delay, often after the next checkout, and counting the
// table for every checkout costs the query this cache saves. An estimate: staff accepting an
// order late give it its time from then.
type queueCounts struct {
	ttl     time.Duration
	mu      sync.Mutex
	stores  map[string]*queueCount
	loading singleflight.Group
}

type queueCount struct {
	n       int
	fetched time.Time
}

func newQueueCounts(ttl time.Duration) *queueCounts {
	return &queueCounts{ttl: ttl, stores: map[string]*queueCount{}}
}

// take returns the store's cached count and counts one more order in, if the count is fresh.
func (q *queueCounts) take(storeID string) (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.stores[storeID]
	if c == nil || time.Since(c.fetched) >= q.ttl {
		return 0, false
	}
	n := c.n
	c.n++
	return n, true
}

// queueCountTimeout bounds a store's queue count, which runs for every checkout waiting on it.
const queueCountTimeout = 2 * time.Second

const queueCountSQL = `SELECT count(*) FROM (SELECT 1 FROM orders WHERE store_id = $1 AND state IN (2, 3) LIMIT $2) q`

// queueAhead returns how many orders are ahead of one about to be confirmed at the store (for
// the ready-by estimate), and counts that order in. When the cached count is stale, tx (a
// transaction of the caller's, or nil) decides where it is read:
//   - nil: on the pool, once for every checkout at the store that needs it meanwhile. The read
//     is detached from the first caller's context, with a timeout of its own: a checkout that
//     gives up must not fail the others waiting on the same read; a caller that gives up
//     returns at once.
//   - a transaction (driving PENDING orders): on it, not shared. Taking a second connection
//     while the transaction holds one would let enough concurrent drives use up the pool and
//     wait on each other.
func (s *Service) queueAhead(ctx context.Context, tx pgx.Tx, storeID string) (int, error) {
	if n, ok := s.queue.take(storeID); ok {
		return n, nil
	}
	var n int
	if tx != nil {
		var err error
		if n, err = s.countQueue(ctx, tx, storeID); err != nil {
			return 0, err
		}
	} else {
		ch := s.queue.loading.DoChan(storeID, func() (any, error) {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queueCountTimeout)
			defer cancel()
			return s.countQueue(ctx, s.db, storeID)
		})
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("count the queue at %s: %w", storeID, ctx.Err())
		case r := <-ch:
			if r.Err != nil {
				return 0, r.Err
			}
			n = r.Val.(int)
		}
	}
	if m, ok := s.queue.take(storeID); ok {
		return m, nil // counted in, after those who took the count before
	}
	return n, nil // the TTL is shorter than the read
}

// countQueue reads the store's queue with q and caches it.
func (s *Service) countQueue(ctx context.Context, q querier, storeID string) (int, error) {
	var n int
	if err := q.QueryRow(ctx, queueCountSQL, storeID, s.cfg.ReadyByQueueCap).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the queue at %s: %w", storeID, err)
	}
	s.queue.mu.Lock()
	s.queue.stores[storeID] = &queueCount{n: n, fetched: time.Now()}
	s.queue.mu.Unlock()
	return n, nil
}

// settle moves a PENDING order (in memory) to where inventory's answer leads: CONFIRMED at the
// store that holds it (ahead: the orders before it in the store's queue), or REJECTED with the
// shortages. answered is when inventory's answer came, by the database's clock, which made
// the holds' deadlines.
func (s *Service) settle(o *order, res *inventoryv1.ReserveHoldsResponse, store storeInfo, ahead int, now, answered time.Time) ([]change, error) {
	switch res.GetOutcome() {
	case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
		if lapsed := lapsedHolds(o, res, answered.Add(s.lapseMargin())); lapsed != "" {
			// An idempotent reserve answered with holds made long ago that have ended since:
			// the stock is no longer promised to this order.
			c, err := o.step(domain.Reject, sagaActor, lapsed, "", now)
			if err != nil {
				return nil, err
			}
			o.Reason = "your reservation lapsed before the order was completed; please check out again"
			return []change{c}, nil
		}
		c, err := o.step(domain.Confirm, sagaActor, "held at "+store.name, "", now)
		if err != nil {
			return nil, err
		}
		o.StoreID, o.StoreName, o.StoreTimeZone, o.PickupWindow = res.GetStoreId(), store.name, store.timeZone, store.pickupWindow
		o.ReadyBy = domain.ReadyBy(now, store.prepTime, ahead, s.cfg.ReadyByQueueCap, store.pickupDeadline)
		o.Timers.AbandonAt = domain.AbandonAt(o.ReadyBy, time.Time{}, o.PickupWindow, store.pickupDeadline)
		// Counted in open hours too: escalating an order to a store that is shut helps no one.
		o.Timers.NotAcceptedAt = store.pickupDeadline(now, s.cfg.NotAcceptedAfter)
		o.HoldDeadline = earliestHoldDeadline(res)
		o.StoreVersion = heldVersion(res)
		o.Placement, o.DriveAt = nil, time.Time{}
		return []change{c}, nil
	case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK, inventoryv1.ReserveOutcome_RESERVE_OUTCOME_STORE_UNAVAILABLE:
		reason := res.GetMessage()
		if reason == "" {
			reason = "not enough stock"
			if res.GetOutcome() == inventoryv1.ReserveOutcome_RESERVE_OUTCOME_STORE_UNAVAILABLE {
				reason = "the store is not taking orders"
			}
		}
		c, err := o.step(domain.Reject, sagaActor, reason, "", now)
		if err != nil {
			return nil, err
		}
		c.nothingHeld = true // inventory holds nothing when it does not reserve
		o.Reason = reason
		o.Shortages = o.Shortages[:0]
		for _, sh := range res.GetShortages() {
			o.Shortages = append(o.Shortages, shortage{SKU: sh.GetSku(), Requested: sh.GetRequested(), Available: sh.GetAvailable()})
		}
		o.Placement, o.DriveAt = nil, time.Time{}
		return []change{c}, nil
	}
	return nil, fmt.Errorf("inventory answered the reserve of order %s with outcome %s", o.ID, res.GetOutcome())
}

// lapsedHolds explains why a RESERVED answer does not hold the order's lines any more, or "".
// A hold at or near its deadline counts as ended even before the sweeper releases it: it may be
// swept before the extension that the confirmation then records reaches it: one ending before
// soon (the answer's time by the database's clock, which set the deadlines, and lapseMargin) is
// not counted on.
func lapsedHolds(o *order, res *inventoryv1.ReserveHoldsResponse, soon time.Time) string {
	open := 0
	for _, h := range res.GetHolds() {
		if h.GetState() == inventoryv1.HoldState_HOLD_STATE_OPEN && (h.GetExpireTime() == nil || h.GetExpireTime().AsTime().After(soon)) {
			open++
		}
	}
	if open < len(o.Lines) {
		return fmt.Sprintf("inventory holds %d of %d lines (the holds ended before the order was written)", open, len(o.Lines))
	}
	return ""
}

// lapseMargin is 10s, or a tenth of PlacementHoldTTL when that is shorter (tests run with
// deadlines of seconds): time enough for an extension to reach inventory before its sweeper.
func (s *Service) lapseMargin() time.Duration {
	return min(10*time.Second, s.cfg.PlacementHoldTTL/10)
}

func earliestHoldDeadline(res *inventoryv1.ReserveHoldsResponse) time.Time {
	var earliest time.Time
	for _, h := range res.GetHolds() {
		if t := h.GetExpireTime().AsTime(); h.GetExpireTime() != nil && (earliest.IsZero() || t.Before(earliest)) {
			earliest = t
		}
	}
	return earliest.UTC().Truncate(time.Microsecond)
}

// placePending writes the order PENDING with its request, for the recovery loop to drive on;
// held is what the checkout's reserve may hold, released if the order was written before and
// has ended (see existing).
// reason is for the order's history, which its shopper reads; cause, the failure itself, is
// for the log.
func (s *Service) placePending(ctx context.Context, id string, req *fulfilmentv1.PlaceOrderRequest, now time.Time, held holding, reason string, cause error) (*order, error) {
	placement, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("keep the placement of order %s: %w", id, err)
	}
	o := newOrder(id, req)
	changes := []change{o.created(sagaActor, reason, now)}
	o.Placement, o.DriveAt = placement, now.Add(s.cfg.PendingAfter)
	var w writeBatch
	if _, err = s.write(ctx, &w, o, changes, true, now); err == nil {
		err = w.sendAlone(ctx, s.db)
	}
	if isOrderConflict(err) {
		existing, err := readOrder(ctx, s.db, id, 0)
		if err != nil || existing == nil {
			return nil, errors.Join(err, fmt.Errorf("order %s vanished after a conflicting insert", id))
		}
		if domain.Final(existing.State) {
			return s.existing(ctx, existing, held)
		}
		return existing, nil
	}
	if err != nil {
		return nil, err
	}
	s.log.Warn("order left PENDING; the recovery loop will settle it", "order_id", id, "reason", reason, "err", cause)
	o.History = []historyEntry{changes[0].entry}
	s.afterCommit(o, changes, false) // counted as placed; its creation has no effect to wake for
	return o, nil
}

// drivePendingOrder settles one PENDING order now, unless another process or loop holds it; it
// returns nil when the order was not there to drive.
func (s *Service) drivePendingOrder(ctx context.Context, id string) (*order, error) {
	orders, err := s.drivePending(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1 AND state = 1 FOR UPDATE SKIP LOCKED`, id)
	if err != nil || len(orders) == 0 {
		return nil, err
	}
	return orders[0], loadHistory(ctx, s.db, orders[0])
}

// drivePending locks the PENDING orders sql selects (FOR UPDATE SKIP LOCKED) and settles each:
// reserve again (idempotent by order id), then CONFIRMED or REJECTED in the same transaction.
// An order whose reserve is still uncertain waits PendingAfter more; one still PENDING
// PendingGiveUp after it was placed is rejected and anything it may hold released.
func (s *Service) drivePending(ctx context.Context, sql string, args ...any) ([]*order, error) {
	type settled struct {
		o        *order
		changes  []change
		effects  bool
		storeGen uint64
	}
	var done []settled
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		orders, err := queryOrders(ctx, tx, sql, args...)
		if err != nil {
			return err
		}
		// By the database's clock, which selected them (runRecovery): the next try, the give-up
		// and the times written. By this copy's, one behind the database's would set each next
		// try in the past, and ask inventory again every sweep.
		now, err := s.clock.Read(ctx, tx)
		if err != nil {
			return err
		}
		// Ask inventory for every order at once: the transaction (and its connection) waits
		// for the slowest answer, not for their sum.
		asked := make([]driveAttempt, len(orders))
		var wg sync.WaitGroup
		for i, o := range orders {
			wg.Go(func() { asked[i] = s.askInventory(ctx, o, now) })
		}
		wg.Wait()
		done = done[:0]
		var w writeBatch
		for i, o := range orders {
			changes, err := s.driveOne(ctx, tx, o, asked[i])
			if err != nil {
				// This order only is tried again later: the others of the round are settled.
				// (A failed statement has failed the transaction anyway, and the round with it.)
				s.log.Warn("pending order not settled; trying it again later", "order_id", o.ID, "err", err)
				o.DriveAt, changes = asked[i].now.Add(s.cfg.PendingAfter), nil
			}
			effects, err := s.write(ctx, &w, o, changes, false, now)
			if err != nil {
				return err
			}
			done = append(done, settled{o, changes, effects, asked[i].storeGen})
		}
		if len(orders) == 0 {
			return nil
		}
		return w.sendIn(ctx, tx)
	})
	if err != nil {
		return nil, err
	}
	out := make([]*order, len(done))
	for i, d := range done {
		s.afterCommit(d.o, d.changes, d.effects)
		out[i] = d.o
	}
	for _, d := range done {
		if d.changes != nil {
			s.recountIfStoreChanged(ctx, d.o, d.storeGen)
		}
	}
	return out, nil
}

// driveAttempt is what inventory said when a PENDING order was driven on.
type driveAttempt struct {
	now      time.Time
	req      *fulfilmentv1.PlaceOrderRequest // nil: the stored request does not decode
	res      *inventoryv1.ReserveHoldsResponse
	err      error // of the reserve
	store    storeInfo
	storeGen uint64 // the store cache's generation when store was read
	storeErr error
}

// askInventory reserves again for a PENDING order (idempotent by order id), unless it is to be
// given up on, and reads its store, at now.
func (s *Service) askInventory(ctx context.Context, o *order, now time.Time) driveAttempt {
	a := driveAttempt{now: now, req: &fulfilmentv1.PlaceOrderRequest{}}
	if err := proto.Unmarshal(o.Placement, a.req); err != nil || len(a.req.GetLines()) == 0 {
		a.req = nil
		return a
	}
	if a.now.Sub(o.CreateTime) >= s.cfg.PendingGiveUp {
		return a
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReserveTimeout)
	a.res, a.err = s.inv.reserve(rctx, s.holdRequest(o.ID, a.req, a.now))
	cancel()
	if a.err == nil && a.res.GetOutcome() == inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		a.storeGen = s.stores.generation()
		a.store, a.storeErr = s.stores.get(ctx, a.res.GetStoreId(), heldVersion(a.res))
	}
	return a
}

// driveOne settles a PENDING order (locked by tx) with inventory's answer a, in memory.
func (s *Service) driveOne(ctx context.Context, tx pgx.Tx, o *order, a driveAttempt) ([]change, error) {
	now := a.now
	switch {
	case a.req == nil:
		c, err := o.step(domain.Reject, sagaActor, "the stored checkout request cannot be read", "", now)
		o.Reason, o.Placement = "the order could not be completed; please check out again", nil
		return []change{c}, err
	case now.Sub(o.CreateTime) >= s.cfg.PendingGiveUp:
		c, err := o.step(domain.Reject, sagaActor, fmt.Sprintf("stock could not be reserved within %s", s.cfg.PendingGiveUp), "", now)
		o.Reason, o.Placement = "the order could not be completed in time; please check out again", nil
		return []change{c}, err // with its release, for whatever an earlier attempt held
	case a.err != nil && uncertain(a.err), a.storeErr != nil:
		o.DriveAt = now.Add(s.cfg.PendingAfter)
		return nil, nil
	case a.err != nil:
		msg := natsrpc.Message(a.err)
		c, err := o.step(domain.Reject, sagaActor, "inventory refused the reservation: "+msg, "", now)
		o.Reason, o.Placement = msg, nil
		return []change{c}, err
	}
	ahead := 0
	if a.res.GetOutcome() == inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		var err error
		if ahead, err = s.queueAhead(ctx, tx, a.res.GetStoreId()); err != nil {
			return nil, err
		}
	}
	changes, err := s.settle(o, a.res, a.store, ahead, now, s.clock.NowOrRead(ctx, s.db))
	for i := range changes {
		changes[i].nothingHeld = false // an earlier attempt may have held something: release is harmless
	}
	return changes, err
}

// runRecovery drives PENDING orders on until ctx ends.
func (s *Service) runRecovery(ctx context.Context) {
	const batch = 8
	for {
		// Due by the database's clock, as the timers are (timersRound).
		orders, err := s.drivePending(ctx, `SELECT `+orderColumns+` FROM orders
			WHERE state = 1 AND timer_at <= statement_timestamp() ORDER BY timer_at LIMIT $1 FOR UPDATE SKIP LOCKED`, batch)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("recovery of pending orders failed; trying again", "err", err)
		}
		if ctx.Err() != nil {
			return
		}
		if len(orders) == batch && slices.ContainsFunc(orders, func(o *order) bool { return o.State != domain.Pending }) {
			continue // more may be waiting, and progress is being made
		}
		if !sleep(ctx, s.cfg.SweepInterval) {
			return
		}
	}
}
