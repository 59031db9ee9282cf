package fulfilment_test

// Model-based random testing of the order lifecycle: random sequences of checkouts, staff and
// shopper actions, stock changes, store closings, time passing and redelivered events against
// the real fulfilment and inventory, with a model of what must hold (DESIGN.md's invariants)
// checked after every step. Each run takes a new seed, printed, so CI explores a little more
// every time; MODEL_SEED=n replays one, and MODEL_SEQS, MODEL_STEPS and MODEL_COPIES (two
// copies of fulfilment and of inventory) make a longer run, e.g.
//
//	MODEL_SEQS=30 MODEL_STEPS=200 MODEL_COPIES=2 go test -race -run TestModelRandomOrderLifecycle ./services/fulfilment

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/inventory"
)

const (
	mPending   = fulfilmentv1.OrderState_ORDER_STATE_PENDING
	mConfirmed = fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED
	mRejected  = fulfilmentv1.OrderState_ORDER_STATE_REJECTED
)

var modelSKUs = []string{"A", "B", "C"}

type mLine struct {
	id          string
	sku         string
	qty         int32
	unavailable bool
}

type mOrder struct {
	key, customer, id string
	req               *fulfilmentv1.PlaceOrderRequest
	state             fulfilmentv1.OrderState
	lines             []*mLine
	wrong             int
	checkIns          int
	bay               string
	lapsed            bool // its holds were swept by inventory (state 'expired')
	neverHeld         bool // cancelled while PENDING: never held anything
	sold              bool // its collection was taken off the model's on hand
}

type model struct {
	t       *testing.T
	e       *env
	rng     *rand.Rand
	store   string
	onHand  map[string]int32
	orders  []*mOrder
	byKey   map[string]*mOrder // customer/key
	steps   []string
	storeSt inventoryv1.StoreState
	closing *inventoryv1.StoreStateChanged // last closing with cancellation
	staff2  fulfilmentv1.StoreOrderServiceClient
	topT    *testing.T
	n       int
	mu      sync.Mutex
}

// sc is the staff client of one of fulfilment's copies. Which copy serves a call is not drawn
// from the seed's generator, which racing goroutines would share: it changes nothing the model
// predicts.
func (m *model) sc() fulfilmentv1.StoreOrderServiceClient {
	if m.staff2 != nil && rand.IntN(2) == 0 {
		return m.staff2
	}
	return m.e.store
}

func (m *model) logf(format string, a ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.steps = append(m.steps, fmt.Sprintf("%3d ", len(m.steps))+fmt.Sprintf(format, a...))
}

func (m *model) fail(format string, a ...any) {
	m.t.Helper()
	m.t.Fatalf("VIOLATION: %s\nsteps:\n%s", fmt.Sprintf(format, a...), strings.Join(m.steps, "\n"))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func TestModelRandomOrderLifecycle(t *testing.T) {
	seqs, steps := envInt("MODEL_SEQS", 4), envInt("MODEL_STEPS", 40)
	seed0 := uint64(envInt("MODEL_SEED", int(time.Now().UnixNano()%1_000_000)))
	copies := envInt("MODEL_COPIES", 1)
	e := newEnv(t, envOptions{copies: copies})
	e.relayInventory()
	var staff2 fulfilmentv1.StoreOrderServiceClient
	topT := t
	if copies > 1 {
		e.addInventoryCopy()
		staff2 = e.secondStoreClient()
	}
	for i := range seqs {
		seed := seed0 + uint64(i)
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			t.Logf("MODEL_SEED=%d steps=%d", seed, steps)
			e.t = t
			m := &model{t: t, e: e, rng: rand.New(rand.NewPCG(seed, 7)), store: fmt.Sprintf("m%d", seed),
				onHand: map[string]int32{}, byKey: map[string]*mOrder{}, staff2: staff2, topT: topT, storeSt: inventoryv1.StoreState_STORE_STATE_OPEN}
			e.addStore(m.store, 10+float64(seed%700)/10, 10, 5*time.Minute, time.Hour) // a latitude of its own, 10° to 79.9°
			for _, s := range modelSKUs {
				n := int32(m.rng.IntN(6) + 3)
				e.setStock(m.store, s, n)
				m.onHand[s] = n
				m.logf("stock %s=%d", s, n)
			}
			for range steps {
				m.step()
				m.check()
			}
			m.final()
			if os.Getenv("MODEL_VERBOSE") != "" {
				t.Logf("steps:\n%s", strings.Join(m.steps, "\n"))
			}
			t.Logf("orders by state: %v", m.summary())
		})
	}
}

func (m *model) summary() map[string]int {
	out := map[string]int{}
	for _, o := range m.orders {
		out[o.state.String()]++
	}
	return out
}

func (m *model) reserved(sku string) int32 {
	var n int32
	for _, o := range m.orders {
		if !domain.Open(o.state) {
			continue
		}
		for _, l := range o.lines {
			if l.sku == sku && !l.unavailable && !o.lapsed {
				n += l.qty
			}
		}
	}
	return n
}

func (m *model) pick(states ...fulfilmentv1.OrderState) *mOrder {
	if len(states) == 0 && m.rng.IntN(5) > 0 {
		states = []fulfilmentv1.OrderState{mConfirmed, preparing, ready}
	}
	var c []*mOrder
	for _, o := range m.orders {
		if len(states) == 0 || slices.Contains(states, o.state) {
			c = append(c, o)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[m.rng.IntN(len(c))]
}

func (m *model) newRequest() (*fulfilmentv1.PlaceOrderRequest, []*mLine) {
	m.n++
	customer := fmt.Sprintf("c%d", m.rng.IntN(3))
	key := fmt.Sprintf("%s-k%d", m.store, m.n)
	skus := slices.Clone(modelSKUs)
	m.rng.Shuffle(len(skus), func(i, j int) { skus[i], skus[j] = skus[j], skus[i] })
	nl := m.rng.IntN(3) + 1
	var ls []line
	var ml []*mLine
	for i := range nl {
		q := int32(m.rng.IntN(2) + 1)
		ls = append(ls, line{skus[i], q})
		ml = append(ml, &mLine{id: fmt.Sprintf("l%d", i+1), sku: skus[i], qty: q})
	}
	return checkout(customer, key, m.store, ls...), ml
}

func (m *model) fits(ml []*mLine, taken map[string]int32) bool {
	for _, l := range ml {
		if m.onHand[l.sku]-m.reserved(l.sku)-taken[l.sku] < l.qty {
			return false
		}
	}
	return true
}

// settle waits for a PENDING order to be driven on.
func (m *model) settle(o *fulfilmentv1.Order) fulfilmentv1.OrderState {
	if o.GetState() != mPending {
		return o.GetState()
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if s := m.e.stateOf(o.GetId()); s != mPending {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.fail("order %s stayed PENDING for 20 s", o.GetId())
	return 0
}

func (m *model) step() {
	e, r := m.e, m.rng
	if r.IntN(100) < 12 {
		m.extraStep()
		return
	}
	switch op := r.IntN(100); {
	case op < 18: // a checkout
		req, ml := m.newRequest()
		want := mRejected
		if m.storeSt == inventoryv1.StoreState_STORE_STATE_OPEN && m.fits(ml, nil) {
			want = mConfirmed
		}
		o, err := e.place(req)
		if err != nil {
			m.logf("checkout %s %v: error %v", req.IdempotencyKey, ml2s(ml), err)
			m.fail("checkout refused: %v", err)
		}
		got := m.settle(o)
		m.logf("checkout %s/%s %v at %s: %s (model %s)", req.CustomerId, req.IdempotencyKey, ml2s(ml), m.storeSt, got, want)
		if got != want {
			m.fail("checkout %s is %s (%s), model says %s", req.IdempotencyKey, got, o.GetReason(), want)
		}
		mo := &mOrder{key: req.IdempotencyKey, customer: req.CustomerId, id: o.GetId(), req: req, state: got, lines: ml}
		m.orders = append(m.orders, mo)
		m.byKey[req.CustomerId+"/"+req.IdempotencyKey] = mo
	case op < 23: // a retried checkout (same key), sometimes with other lines
		mo := m.pick()
		if mo == nil {
			return
		}
		req := mo.req
		changed := r.IntN(3) == 0
		if changed {
			other, _ := m.newRequest()
			other.IdempotencyKey, other.CustomerId, other.CartId = mo.key, mo.customer, mo.req.CartId
			req = other
		}
		o, err := e.place(req)
		m.logf("retry checkout %s/%s (changed lines %v): %v %v", mo.customer, mo.key, changed, o.GetState(), err)
		if err == nil && o.GetId() != mo.id {
			m.fail("retry of key %s got order %s, first was %s", mo.key, o.GetId(), mo.id)
		}
		if err == nil && o.GetState() != mo.state {
			m.fail("retry of key %s answered state %s, order is %s", mo.key, o.GetState(), mo.state)
		}
		if err != nil && !changed {
			m.fail("retry of key %s refused: %v", mo.key, err)
		}
	case op < 28: // concurrent checkouts, some sharing a key
		k := r.IntN(3) + 2
		type attempt struct {
			req *fulfilmentv1.PlaceOrderRequest
			ml  []*mLine
			o   *fulfilmentv1.Order
			err error
		}
		var as []*attempt
		for i := range k {
			if i > 0 && r.IntN(3) == 0 {
				as = append(as, &attempt{req: as[r.IntN(len(as))].req, ml: as[0].ml})
				as[len(as)-1].ml = nil // filled below from the request it repeats
				continue
			}
			req, ml := m.newRequest()
			as = append(as, &attempt{req: req, ml: ml})
		}
		lineOf := map[*fulfilmentv1.PlaceOrderRequest][]*mLine{}
		for _, a := range as {
			if a.ml != nil {
				lineOf[a.req] = a.ml
			}
		}
		var wg sync.WaitGroup
		for _, a := range as {
			wg.Go(func() { a.o, a.err = e.place(a.req) })
		}
		wg.Wait()
		byReq := map[*fulfilmentv1.PlaceOrderRequest]string{}
		var keys []string
		var confirmedNew []*mOrder
		var rejected []*mOrder
		for _, a := range as {
			if a.err != nil {
				m.logf("concurrent checkout %s: error %v", a.req.IdempotencyKey, a.err)
				m.fail("concurrent checkout refused: %v", a.err)
			}
			if id, ok := byReq[a.req]; ok {
				if id != a.o.GetId() {
					m.fail("two concurrent checkouts with key %s got orders %s and %s", a.req.IdempotencyKey, id, a.o.GetId())
				}
				continue
			}
			byReq[a.req] = a.o.GetId()
			got := m.settle(a.o)
			mo := &mOrder{key: a.req.IdempotencyKey, customer: a.req.CustomerId, id: a.o.GetId(), req: a.req, state: got, lines: lineOf[a.req]}
			keys = append(keys, fmt.Sprintf("%s:%v=%s", a.req.IdempotencyKey, ml2s(mo.lines), got))
			switch got {
			case mConfirmed:
				confirmedNew = append(confirmedNew, mo)
			case mRejected:
				rejected = append(rejected, mo)
			default:
				m.fail("concurrent checkout %s ended %s", mo.key, got)
			}
		}
		m.logf("concurrent checkouts (%d calls) at %s: %v", len(as), m.storeSt, keys)
		taken := map[string]int32{}
		for _, mo := range confirmedNew {
			for _, l := range mo.lines {
				taken[l.sku] += l.qty
			}
		}
		if m.storeSt != inventoryv1.StoreState_STORE_STATE_OPEN && len(confirmedNew) > 0 {
			m.fail("orders confirmed at a store %s", m.storeSt)
		}
		for _, l := range modelSKUs {
			if m.onHand[l]-m.reserved(l)-taken[l] < 0 {
				m.fail("concurrent checkouts confirmed more %s than available", l)
			}
		}
		if m.storeSt == inventoryv1.StoreState_STORE_STATE_OPEN {
			for _, mo := range rejected {
				if m.fits(mo.lines, taken) {
					m.fail("checkout %s rejected though its lines %v fit beside the confirmed ones", mo.key, ml2s(mo.lines))
				}
			}
		}
		for _, mo := range append(confirmedNew, rejected...) {
			m.orders = append(m.orders, mo)
			m.byKey[mo.customer+"/"+mo.key] = mo
		}
	case op < 35: // customer cancel
		mo := m.pick()
		if mo == nil {
			return
		}
		_, err := e.orders.CancelOrder(e.asCustomer(mo.customer), &fulfilmentv1.CancelOrderRequest{OrderId: mo.id})
		m.act("customer cancel", mo, err, mo.state == mConfirmed, cancelled)
	case op < 45: // accept
		mo := m.pick(mConfirmed, preparing, ready)
		if mo == nil {
			return
		}
		_, err := m.sc().AcceptOrder(e.asStaff(m.store), &fulfilmentv1.AcceptOrderRequest{StoreId: m.store, OrderId: mo.id})
		m.act("accept", mo, err, mo.state == mConfirmed, preparing)
	case op < 50: // line unavailable
		mo := m.pick(mConfirmed, preparing, ready)
		if mo == nil {
			return
		}
		l := mo.lines[r.IntN(len(mo.lines))]
		active := 0
		for _, x := range mo.lines {
			if !x.unavailable {
				active++
			}
		}
		_, err := m.sc().MarkLineUnavailable(e.asStaff(m.store), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: m.store, OrderId: mo.id, LineId: l.id, Reason: "out"})
		ok := (mo.state == mConfirmed || mo.state == preparing) && !l.unavailable && active > 1
		m.act("line "+l.id+" unavailable", mo, err, ok, mo.state)
		if err == nil && ok {
			l.unavailable = true
		}
	case op < 58: // mark ready
		mo := m.pick(preparing, mConfirmed, ready)
		if mo == nil {
			return
		}
		_, err := m.sc().MarkReady(e.asStaff(m.store), &fulfilmentv1.MarkReadyRequest{StoreId: m.store, OrderId: mo.id})
		m.act("mark ready", mo, err, mo.state == preparing, ready)
	case op < 68: // hand over, right or wrong code
		mo := m.pick(ready, preparing)
		if mo == nil {
			return
		}
		code := domain.PickupCode(testSecret, mo.id)
		right := r.IntN(3) > 0
		if !right {
			code = otherCode(code)
		}
		_, err := m.sc().HandOver(e.asStaff(m.store), &fulfilmentv1.HandOverRequest{StoreId: m.store, OrderId: mo.id, PickupCode: code})
		switch {
		case right:
			m.act("hand over (right code)", mo, err, mo.state == ready && mo.wrong < 5, collected)
		default:
			m.logf("hand over %s (wrong code, %d wrong so far): %v", mo.key, mo.wrong, err)
			if err == nil {
				m.fail("hand-over of %s with a wrong code succeeded", mo.key)
			}
			if mo.state == ready {
				mo.wrong++
			}
		}
	case op < 73: // check-in
		mo := m.pick()
		if mo == nil {
			return
		}
		bay := fmt.Sprint(r.IntN(3))
		_, err := e.orders.CheckIn(e.asCustomer(mo.customer), &fulfilmentv1.CheckInRequest{OrderId: mo.id, Bay: bay})
		again := mo.checkIns > 0 && mo.bay == bay && domain.Open(mo.state)
		ok := domain.Open(mo.state) && (again || mo.checkIns < 5)
		m.act("check in at "+bay, mo, err, ok, mo.state)
		if err == nil && ok && !again {
			mo.checkIns++
			mo.bay = bay
		}
	case op < 79: // stock delivery or damage
		sku := modelSKUs[r.IntN(len(modelSKUs))]
		d := int32(r.IntN(4) + 1)
		reason := inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY
		if r.IntN(2) == 0 {
			d, reason = -d, inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE
		}
		m.n++
		_, _, err := e.inv.AdjustStock(e.ctx, closingAdmin, &inventoryv1.AdjustStockRequest{StoreId: m.store, Sku: sku, Delta: d, Reason: reason,
			IdempotencyKey: fmt.Sprintf("%s-adj-%d", m.store, m.n)})
		ok := m.onHand[sku]+d >= m.reserved(sku)
		m.logf("adjust %s by %d (on hand %d, reserved %d): %v", sku, d, m.onHand[sku], m.reserved(sku), err)
		if (err == nil) != ok {
			m.fail("adjust %s by %d: err %v, model says ok=%v", sku, d, err, ok)
		}
		if err == nil {
			m.onHand[sku] += d
		}
	case op < 83: // a count
		sku := modelSKUs[r.IntN(len(modelSKUs))]
		n := int32(r.IntN(8))
		m.n++
		_, _, err := e.inv.SetStock(e.ctx, closingAdmin, &inventoryv1.SetStockRequest{StoreId: m.store, Sku: sku, OnHand: n,
			IdempotencyKey: fmt.Sprintf("%s-count-%d", m.store, m.n)})
		ok := n >= m.reserved(sku)
		m.logf("count %s = %d (on hand %d, reserved %d): %v", sku, n, m.onHand[sku], m.reserved(sku), err)
		if (err == nil) != ok {
			m.fail("count %s = %d: err %v, model says ok=%v", sku, n, err, ok)
		}
		if err == nil {
			m.onHand[sku] = n
		}
	case op < 87: // the store closes (with or without cancelling), pauses or reopens
		var c inventory.StateChange
		switch x := r.IntN(4); {
		case m.storeSt != inventoryv1.StoreState_STORE_STATE_OPEN && x < 3:
			c = inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_OPEN}
		case x == 0:
			c = inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "busy"}
		case x == 1:
			c = inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "night"}
		case x == 2 && r.IntN(2) == 0:
			c = inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Actor: closingAdmin}
		default:
			c = inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_OPEN}
		}
		res, err := e.inv.SetStoreState(e.ctx, m.store, c)
		m.logf("store -> %s cancel=%v: %v", c.State, c.CancelOpenOrders, err)
		if err != nil {
			m.fail("set store state: %v", err)
		}
		m.storeSt = c.State
		if c.CancelOpenOrders {
			m.closing = &inventoryv1.StoreStateChanged{StoreId: m.store, PreviousState: inventoryv1.StoreState_STORE_STATE_OPEN,
				State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Version: res.GetStore().GetVersion(), Actor: closingAdmin}
			for _, o := range m.orders {
				if domain.Open(o.state) {
					o.state = cancelled
				}
			}
		}
		// Wait until fulfilment has seen the store's change (its cache, its closings).
		m.waitOrders(10 * time.Second)
	case op < 91: // time passes for an open order: it expires
		mo := m.pick(mConfirmed, preparing, ready)
		if mo == nil {
			return
		}
		var err error
		if mo.state == ready {
			_, err = e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = now() - interval '1 second', timer_at = now() WHERE id = $1`, mo.id)
		} else {
			_, err = e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = now() - interval '2 hours',
				accept_time = CASE WHEN accept_time IS NULL THEN NULL ELSE now() - interval '2 hours' END,
				abandon_at = now() - interval '1 second', not_accepted_at = NULL, timer_at = now() WHERE id = $1`, mo.id)
		}
		if err != nil {
			m.t.Fatal(err)
		}
		m.logf("time passes for %s (%s): expect EXPIRED", mo.key, mo.state)
		mo.state = expired
		m.waitOrders(15 * time.Second)
	case op < 93: // an open order's holds lapse at inventory (outage): it is cancelled
		mo := m.pick(mConfirmed, preparing, ready)
		if mo == nil {
			return
		}
		e.waitNoEffects()
		if _, err := e.invPool.Exec(e.ctx, `UPDATE holds SET expire_time = now() - interval '1 second' WHERE order_id = $1 AND state = 'open'`, mo.id); err != nil {
			m.t.Fatal(err)
		}
		m.waitFor(15*time.Second, func() error {
			if h := e.holds(mo.id); h["open"] != 0 {
				return fmt.Errorf("holds %v", h)
			}
			return nil
		})
		if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET hold_deadline = now() + interval '30 seconds', timer_at = now() WHERE id = $1`, mo.id); err != nil {
			m.t.Fatal(err)
		}
		m.logf("holds of %s (%s) lapse: expect CANCELLED", mo.key, mo.state)
		mo.state, mo.lapsed = cancelled, true
		m.waitOrders(30 * time.Second)
	case op < 96: // a closing event redelivered (a late copy)
		if m.closing == nil {
			return
		}
		var before int
		_ = e.pool.QueryRow(e.ctx, `SELECT count(*) FROM processed_events WHERE consumer = 'fulfilment-store-states'`).Scan(&before)
		e.publishStoreState(m.closing)
		m.logf("closing event of version %d redelivered", m.closing.Version)
		m.waitFor(10*time.Second, func() error {
			var n int
			if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM processed_events WHERE consumer = 'fulfilment-store-states'`).Scan(&n); err != nil {
				return err
			}
			if n <= before {
				return fmt.Errorf("not handled yet")
			}
			return nil
		})
	case op < 98: // a staff cancel racing a hand-over
		mo := m.pick(ready)
		if mo == nil {
			return
		}
		var errC, errH error
		var wg sync.WaitGroup
		wg.Go(func() {
			_, errC = m.sc().CancelOrder(e.asStaff(m.store), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: m.store, OrderId: mo.id, Reason: "race"})
		})
		wg.Go(func() {
			_, errH = m.sc().HandOver(e.asStaff(m.store), &fulfilmentv1.HandOverRequest{StoreId: m.store, OrderId: mo.id, PickupCode: domain.PickupCode(testSecret, mo.id)})
		})
		wg.Wait()
		m.logf("race cancel/hand-over of %s (wrong %d): cancel %v, hand over %v", mo.key, mo.wrong, errC, errH)
		switch {
		case errC == nil && errH == nil:
			m.fail("both the cancel and the hand-over of %s succeeded", mo.key)
		case errC == nil:
			mo.state = cancelled
		case errH == nil:
			mo.state = collected
		default:
			m.fail("neither cancel nor hand-over of %s succeeded: %v / %v", mo.key, errC, errH)
		}
	default: // staff cancel, or a replayed inventory effect of an ended order
		if r.IntN(2) == 0 {
			mo := m.pick()
			if mo == nil {
				return
			}
			_, err := m.sc().CancelOrder(e.asStaff(m.store), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: m.store, OrderId: mo.id, Reason: "staff"})
			m.act("staff cancel", mo, err, domain.Open(mo.state), cancelled)
			return
		}
		mo := m.pick(collected, cancelled, expired)
		if mo == nil {
			return
		}
		var err error
		if mo.state == collected {
			_, err = e.inv.CommitHolds(e.ctx, &inventoryv1.CommitHoldsRequest{OrderId: mo.id})
		} else {
			_, err = e.inv.ReleaseHolds(e.ctx, mo.id, "", inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED)
		}
		m.logf("effect of %s (%s) replayed: %v", mo.key, mo.state, err)
	}
}

// act records a staff or shopper action's outcome against the model: when ok, the action
// must succeed and the order be in to; otherwise it must be refused (or be a repeat that
// changes nothing).
func (m *model) act(what string, mo *mOrder, err error, ok bool, to fulfilmentv1.OrderState) {
	m.t.Helper()
	m.logf("%s of %s (%s): %v (model ok=%v)", what, mo.key, mo.state, err, ok)
	switch {
	case ok && err != nil:
		m.fail("%s of %s in %s refused: %v", what, mo.key, mo.state, err)
	case ok:
		mo.state = to
	case err == nil:
		if s := m.e.stateOf(mo.id); s != mo.state {
			m.fail("%s of %s in %s succeeded, model refused it; order now %s", what, mo.key, mo.state, s)
		}
	default:
		switch status.Code(err) {
		case codes.FailedPrecondition, codes.ResourceExhausted, codes.NotFound:
		default:
			m.fail("%s of %s refused with an unexpected code: %v", what, mo.key, err)
		}
	}
}

func (m *model) waitFor(d time.Duration, f func() error) {
	m.t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.fail("timed out: %v", err)
}

// waitOrders waits until every order is in the model's state.
func (m *model) waitOrders(d time.Duration) {
	m.t.Helper()
	m.waitFor(d, func() error {
		for _, o := range m.orders {
			if s := m.e.stateOf(o.id); s != o.state {
				return fmt.Errorf("order %s (%s) is %s, model %s", o.key, o.id, s, o.state)
			}
		}
		return nil
	})
}

func ml2s(ls []*mLine) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%s%d ", l.sku, l.qty)
	}
	return strings.TrimSpace(b.String())
}

var allowedTo = map[fulfilmentv1.OrderState][]fulfilmentv1.OrderState{
	mPending:   {mConfirmed, mRejected, cancelled},
	mConfirmed: {mConfirmed, preparing, cancelled, expired},
	preparing:  {preparing, ready, cancelled, expired},
	ready:      {ready, collected, cancelled, expired},
}

// check compares the system with the model once its effects are carried out.
func (m *model) check() {
	m.t.Helper()
	e := m.e
	for _, o := range m.orders {
		if o.state == collected && !o.sold {
			o.sold = true
			for _, l := range o.lines {
				if !l.unavailable && !o.lapsed {
					m.onHand[l.sku] -= l.qty
				}
			}
		}
	}
	m.waitOrders(10 * time.Second)
	e.waitNoEffects()
	// Holds per order.
	for _, o := range m.orders {
		want := map[string]int{}
		for _, l := range o.lines {
			switch {
			case o.state == mRejected:
			case o.lapsed && !l.unavailable:
				want["expired"]++
			case l.unavailable:
				want["released"]++
			case domain.Open(o.state):
				want["open"]++
			case o.state == collected:
				want["committed"]++
			default:
				want["released"]++
			}
		}
		got := e.holds(o.id)
		if o.state == mRejected || o.neverHeld {
			if got["open"] != 0 || got["committed"] != 0 {
				m.fail("rejected order %s has holds %v", o.key, got)
			}
			continue
		}
		if !mapsEqual(got, want) {
			m.fail("order %s (%s, lines %v) holds %v, model %v", o.key, o.state, ml2s(o.lines), got, want)
		}
	}
	// Stock levels.
	res, err := e.inv.ListStock(e.ctx, &inventoryv1.ListStockRequest{StoreId: m.store})
	if err != nil {
		m.t.Fatal(err)
	}
	for _, l := range res.GetLevels() {
		if l.GetOnHand() != m.onHand[l.GetSku()] || l.GetReserved() != m.reserved(l.GetSku()) {
			m.fail("stock %s on hand %d reserved %d, model %d / %d", l.GetSku(), l.GetOnHand(), l.GetReserved(), m.onHand[l.GetSku()], m.reserved(l.GetSku()))
		}
	}
	inv, err := e.inv.CheckInvariants(e.ctx, m.store)
	if err != nil {
		m.t.Fatal(err)
	}
	if !inv.GetOk() {
		m.fail("inventory invariants broken: %v", inv.GetViolations())
	}
	// One order per key.
	var dup int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM (SELECT 1 FROM orders WHERE store_id = $1 OR idempotency_key LIKE $2
		GROUP BY customer_id, idempotency_key HAVING count(*) > 1) x`, m.store, m.store+"-%").Scan(&dup); err != nil {
		m.t.Fatal(err)
	}
	if dup > 0 {
		m.fail("%d keys with more than one order", dup)
	}
	var orders int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders WHERE idempotency_key LIKE $1`, m.store+"-%").Scan(&orders); err != nil {
		m.t.Fatal(err)
	}
	if orders != len(m.orders) {
		m.fail("%d orders for this store's keys, model has %d", orders, len(m.orders))
	}
	// History consistent with the row.
	for _, o := range m.orders {
		m.checkHistory(o)
	}
}

func (m *model) checkHistory(o *mOrder) {
	e := m.e
	var version int64
	var state int16
	if err := e.pool.QueryRow(e.ctx, `SELECT version, state FROM orders WHERE id = $1`, o.id).Scan(&version, &state); err != nil {
		m.t.Fatal(err)
	}
	rows, err := e.pool.Query(e.ctx, `SELECT seq, from_state, to_state, event FROM order_history WHERE order_id = $1 ORDER BY seq`, o.id)
	if err != nil {
		m.t.Fatal(err)
	}
	defer rows.Close()
	prev := fulfilmentv1.OrderState(0)
	var n int64
	finals := 0
	for rows.Next() {
		var seq int64
		var from, to int16
		var ev string
		if err := rows.Scan(&seq, &from, &to, &ev); err != nil {
			m.t.Fatal(err)
		}
		n++
		if seq != n {
			m.fail("order %s history seq %d at position %d", o.key, seq, n)
		}
		f, tt := fulfilmentv1.OrderState(from), fulfilmentv1.OrderState(to)
		if n > 1 && f != prev {
			m.fail("order %s history entry %d from %s, previous ended %s", o.key, seq, f, prev)
		}
		if n > 1 && !slices.Contains(allowedTo[f], tt) {
			m.fail("order %s history entry %d: %s -> %s (%s) not allowed", o.key, seq, f, tt, ev)
		}
		if f != tt && domain.Final(tt) {
			finals++
		}
		prev = tt
	}
	if n != version {
		m.fail("order %s version %d, history has %d entries", o.key, version, n)
	}
	if prev != fulfilmentv1.OrderState(state) {
		m.fail("order %s is %s, its history ends %s", o.key, fulfilmentv1.OrderState(state), prev)
	}
	if finals > 1 {
		m.fail("order %s ended %d times", o.key, finals)
	}
}

// final checks every order's events against its history once the relay has caught up.
func (m *model) final() {
	m.t.Helper()
	e := m.e
	m.waitFor(15*time.Second, func() error {
		for _, o := range m.orders {
			rows, err := e.pool.Query(e.ctx, `SELECT event FROM order_history WHERE order_id = $1 ORDER BY seq`, o.id)
			if err != nil {
				return err
			}
			var hist []string
			for rows.Next() {
				var ev string
				_ = rows.Scan(&ev)
				hist = append(hist, ev)
			}
			rows.Close()
			if len(hist) > 0 && hist[0] == "" {
				hist = hist[1:]
			}
			got := m.distinctEvents(o.id)
			if !slices.Equal(got, hist) {
				return fmt.Errorf("order %s events %v, history %v", o.key, got, hist)
			}
		}
		return nil
	})
	m.check()
}

// distinctEvents are the order's events published, one per event id, in order.
func (m *model) distinctEvents(orderID string) []string {
	l := m.e.events
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, r := range l.events {
		if r.ev.GetOrder().GetId() != orderID || seen[r.msgID] {
			continue
		}
		seen[r.msgID] = true
		out = append(out, r.subject[strings.LastIndex(r.subject, ".")+1:])
	}
	return out
}

var _ = context.Background
var _ = commonv1.ActorKind_ACTOR_KIND_ADMIN

// extraStep: lockouts and races, after which the model takes the system's outcome when it
// is one the rules allow.
func (m *model) extraStep() {
	e, r := m.e, m.rng
	switch r.IntN(6) {
	case 4: // a closing with cancellation racing checkouts
		if m.storeSt != inventoryv1.StoreState_STORE_STATE_OPEN {
			return
		}
		var reqs []*fulfilmentv1.PlaceOrderRequest
		lineOf := map[string][]*mLine{}
		for range r.IntN(3) + 1 {
			req, ml := m.newRequest()
			reqs = append(reqs, req)
			lineOf[req.IdempotencyKey] = ml
		}
		outs := make([]*fulfilmentv1.Order, len(reqs))
		errs := make([]error, len(reqs))
		var wg sync.WaitGroup
		var closeErr error
		var res *inventoryv1.SetStoreStateResponse
		wg.Go(func() {
			res, closeErr = e.inv.SetStoreState(e.ctx, m.store, inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Actor: closingAdmin})
		})
		for i := range reqs {
			wg.Go(func() { outs[i], errs[i] = e.place(reqs[i]) })
		}
		wg.Wait()
		if closeErr != nil {
			m.fail("closing: %v", closeErr)
		}
		m.storeSt = inventoryv1.StoreState_STORE_STATE_CLOSED
		m.closing = &inventoryv1.StoreStateChanged{StoreId: m.store, PreviousState: inventoryv1.StoreState_STORE_STATE_OPEN,
			State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Version: res.GetStore().GetVersion(), Actor: closingAdmin}
		var got []string
		for i, req := range reqs {
			if errs[i] != nil {
				m.fail("checkout racing a closing: %v", errs[i])
			}
			got = append(got, fmt.Sprintf("%s=%s", req.IdempotencyKey, outs[i].GetState()))
			mo := &mOrder{key: req.IdempotencyKey, customer: req.CustomerId, id: outs[i].GetId(), req: req, state: outs[i].GetState(), lines: lineOf[req.IdempotencyKey]}
			m.orders = append(m.orders, mo)
			m.byKey[mo.customer+"/"+mo.key] = mo
		}
		m.logf("closing with cancellation racing checkouts: %v", got)
		// Every order open at the store must end: the closing covers what was held before it,
		// and nothing is held after it.
		m.waitFor(20*time.Second, func() error {
			for _, o := range m.orders {
				s := e.stateOf(o.id)
				if domain.Open(s) || s == mPending {
					return fmt.Errorf("order %s is %s after the store closed with cancellation", o.key, s)
				}
			}
			return nil
		})
		for _, o := range m.orders {
			s := e.stateOf(o.id)
			if domain.Open(o.state) || o.state == mPending {
				if s != cancelled && s != mRejected {
					m.fail("order %s %s -> %s", o.key, o.state, s)
				}
				o.state = s
			}
		}
	case 5: // inventory out of reach: checkouts stay PENDING, some are cancelled, then it is back
		if m.staff2 != nil || m.storeSt != inventoryv1.StoreState_STORE_STATE_OPEN {
			return
		}
		if err := e.invRPC.Stop(); err != nil {
			m.t.Fatal(err)
		}
		var pend []*mOrder
		for range r.IntN(3) + 1 {
			req, ml := m.newRequest()
			o, err := e.placeWithin(req, 3*time.Second)
			if err != nil {
				m.fail("checkout while inventory is away: %v", err)
			}
			mo := &mOrder{key: req.IdempotencyKey, customer: req.CustomerId, id: o.GetId(), req: req, state: o.GetState(), lines: ml}
			if mo.state != mPending {
				m.fail("checkout while inventory is away is %s", mo.state)
			}
			pend = append(pend, mo)
		}
		var cancelledKeys []string
		for _, mo := range pend {
			if r.IntN(2) == 0 {
				_, err := e.orders.CancelOrder(e.asCustomer(mo.customer), &fulfilmentv1.CancelOrderRequest{OrderId: mo.id})
				if err != nil {
					m.fail("cancel of a PENDING order: %v", err)
				}
				mo.state, mo.neverHeld = cancelled, true
				cancelledKeys = append(cancelledKeys, mo.key)
			}
		}
		e.t = m.topT // the endpoints outlive this sequence
		e.invRPC = e.serveInventory()
		e.t = m.t
		m.waitFor(30*time.Second, func() error {
			for _, mo := range pend {
				if s := e.stateOf(mo.id); s == mPending {
					return fmt.Errorf("order %s still PENDING", mo.key)
				}
			}
			return nil
		})
		taken := map[string]int32{}
		var got []string
		var rej []*mOrder
		for _, mo := range pend {
			s := e.stateOf(mo.id)
			got = append(got, fmt.Sprintf("%s:%s=%s", mo.key, ml2s(mo.lines), s))
			if mo.state == cancelled && s != cancelled {
				m.fail("order %s cancelled while PENDING is now %s", mo.key, s)
			}
			switch s {
			case mConfirmed:
				for _, l := range mo.lines {
					taken[l.sku] += l.qty
				}
			case mRejected:
				rej = append(rej, mo)
			}
			mo.state = s
		}
		m.logf("inventory away: PENDING orders, cancelled %v, then back: %v", cancelledKeys, got)
		// A cancelled PENDING order's release waits for a late reserve (lateReserve, ~20 s).
		m.waitFor(45*time.Second, func() error {
			var n int
			if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_effects`).Scan(&n); err != nil || n > 0 {
				return fmt.Errorf("%d effects pending (%v)", n, err)
			}
			return nil
		})
		for _, mo := range rej {
			if m.fits(mo.lines, taken) {
				m.fail("order %s rejected after inventory came back though its lines fit", mo.key)
			}
		}
		for _, mo := range pend {
			m.orders = append(m.orders, mo)
			m.byKey[mo.customer+"/"+mo.key] = mo
		}
	case 0: // five wrong codes in a row, the right one refused, the lock's time passing
		mo := m.pick(ready)
		if mo == nil {
			return
		}
		for mo.wrong < 5 {
			_, err := m.sc().HandOver(e.asStaff(m.store), &fulfilmentv1.HandOverRequest{StoreId: m.store, OrderId: mo.id, PickupCode: otherCode(domain.PickupCode(testSecret, mo.id))})
			if err == nil {
				m.fail("wrong code handed %s over", mo.key)
			}
			mo.wrong++
		}
		_, err := m.sc().HandOver(e.asStaff(m.store), &fulfilmentv1.HandOverRequest{StoreId: m.store, OrderId: mo.id, PickupCode: domain.PickupCode(testSecret, mo.id)})
		m.logf("lockout of %s: right code after 5 wrong: %v", mo.key, err)
		if status.Code(err) != codes.ResourceExhausted {
			m.fail("right code of a locked order %s: %v, want ResourceExhausted", mo.key, err)
		}
		if r.IntN(2) == 0 {
			if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET pickup_locked_until = now() - interval '1 second' WHERE id = $1`, mo.id); err != nil {
				m.t.Fatal(err)
			}
			_, err := m.sc().HandOver(e.asStaff(m.store), &fulfilmentv1.HandOverRequest{StoreId: m.store, OrderId: mo.id, PickupCode: domain.PickupCode(testSecret, mo.id)})
			m.logf("lock of %s over: right code: %v", mo.key, err)
			if err != nil {
				m.fail("right code after the lock ended refused: %v", err)
			}
			mo.state, mo.wrong = collected, 0
		}
	default: // a race of several actions on one open order
		mo := m.pick(mConfirmed, preparing, ready)
		if mo == nil {
			return
		}
		before := mo.state
		type act struct {
			name string
			f    func() error
			err  error
		}
		all := []act{
			{name: "accept", f: func() error {
				_, err := m.sc().AcceptOrder(e.asStaff(m.store), &fulfilmentv1.AcceptOrderRequest{StoreId: m.store, OrderId: mo.id})
				return err
			}},
			{name: "ready", f: func() error {
				_, err := m.sc().MarkReady(e.asStaff(m.store), &fulfilmentv1.MarkReadyRequest{StoreId: m.store, OrderId: mo.id})
				return err
			}},
			{name: "customer-cancel", f: func() error {
				_, err := e.orders.CancelOrder(e.asCustomer(mo.customer), &fulfilmentv1.CancelOrderRequest{OrderId: mo.id})
				return err
			}},
			{name: "staff-cancel", f: func() error {
				_, err := m.sc().CancelOrder(e.asStaff(m.store), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: m.store, OrderId: mo.id, Reason: "race"})
				return err
			}},
			{name: "hand-over", f: func() error {
				_, err := m.sc().HandOver(e.asStaff(m.store), &fulfilmentv1.HandOverRequest{StoreId: m.store, OrderId: mo.id, PickupCode: domain.PickupCode(testSecret, mo.id)})
				return err
			}},
			{name: "line-l1", f: func() error {
				_, err := m.sc().MarkLineUnavailable(e.asStaff(m.store), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: m.store, OrderId: mo.id, LineId: "l1", Reason: "out"})
				return err
			}},
			{name: "line-l2", f: func() error {
				_, err := m.sc().MarkLineUnavailable(e.asStaff(m.store), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: m.store, OrderId: mo.id, LineId: "l2", Reason: "out"})
				return err
			}},
			{name: "check-in", f: func() error {
				_, err := e.orders.CheckIn(e.asCustomer(mo.customer), &fulfilmentv1.CheckInRequest{OrderId: mo.id, Bay: "9"})
				return err
			}},
			{name: "expire", f: func() error {
				_, err := e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = CASE WHEN state = 4 THEN now() ELSE pickup_deadline END,
					ready_by = CASE WHEN state IN (2, 3) THEN now() - interval '2 hours' ELSE ready_by END,
					accept_time = CASE WHEN accept_time IS NULL THEN NULL ELSE now() - interval '2 hours' END,
					abandon_at = CASE WHEN state IN (2, 3) THEN now() ELSE abandon_at END, timer_at = now() WHERE id = $1`, mo.id)
				return err
			}},
			{name: "damage", f: func() error {
				m.mu.Lock()
				m.n++
				k := fmt.Sprintf("%s-dmg-%d", m.store, m.n)
				m.mu.Unlock()
				_, _, err := e.inv.AdjustStock(e.ctx, closingAdmin, &inventoryv1.AdjustStockRequest{StoreId: m.store, Sku: mo.lines[0].sku, Delta: -1,
					Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE, IdempotencyKey: k})
				return err
			}},
		}
		r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		acts := all[:r.IntN(3)+2]
		var wg sync.WaitGroup
		for i := range acts {
			wg.Go(func() { acts[i].err = acts[i].f() })
		}
		wg.Wait()
		var names []string
		ends := 0
		handed := false
		for _, a := range acts {
			names = append(names, fmt.Sprintf("%s=%v", a.name, status.Code(a.err)))
			if a.err == nil && (a.name == "customer-cancel" || a.name == "staff-cancel" || a.name == "hand-over") {
				ends++
				handed = handed || a.name == "hand-over"
			}
			if a.err != nil && a.name != "damage" {
				switch status.Code(a.err) {
				case codes.FailedPrecondition, codes.ResourceExhausted, codes.PermissionDenied, codes.NotFound:
				default:
					m.fail("race on %s: %s: unexpected error %v", mo.key, a.name, a.err)
				}
			}
		}
		// Let the timers fire (an expiry set in the race), then take the outcome.
		time.Sleep(150 * time.Millisecond)
		e.waitNoEffects()
		var st int16
		var linesJSON []byte
		if err := e.pool.QueryRow(e.ctx, `SELECT state, lines FROM orders WHERE id = $1`, mo.id).Scan(&st, &linesJSON); err != nil {
			m.t.Fatal(err)
		}
		after := fulfilmentv1.OrderState(st)
		m.logf("race on %s (%s): %v -> %s", mo.key, before, names, after)
		if ends > 1 {
			m.fail("race on %s: %d ending actions succeeded", mo.key, ends)
		}
		if handed && after != collected {
			m.fail("race on %s: hand-over succeeded, order %s", mo.key, after)
		}
		if !reachable(before, after) {
			m.fail("race on %s: %s -> %s not reachable", mo.key, before, after)
		}
		mo.state = after
		if after == collected {
			mo.wrong = 0
		}
		m.resyncLines(mo, linesJSON)
		m.resyncStock()
	}
}

func reachable(from, to fulfilmentv1.OrderState) bool {
	seen := map[fulfilmentv1.OrderState]bool{from: true}
	queue := []fulfilmentv1.OrderState{from}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, n := range allowedTo[s] {
			if !seen[n] {
				seen[n] = true
				queue = append(queue, n)
			}
		}
	}
	return seen[to]
}

func (m *model) resyncLines(mo *mOrder, raw []byte) {
	var ls []struct {
		ID          string `json:"id"`
		Unavailable bool   `json:"unavailable"`
	}
	if err := json.Unmarshal(raw, &ls); err != nil {
		m.t.Fatal(err)
	}
	for _, x := range ls {
		for _, l := range mo.lines {
			if l.id == x.ID {
				if l.unavailable && !x.Unavailable {
					m.fail("order %s line %s available again", mo.key, l.id)
				}
				l.unavailable = x.Unavailable
			}
		}
	}
}

// resyncStock takes on hand from inventory (after a race with a stock change); the check
// after the step still compares reserved with the model and runs inventory's invariants.
func (m *model) resyncStock() {
	res, err := m.e.inv.ListStock(m.e.ctx, &inventoryv1.ListStockRequest{StoreId: m.store})
	if err != nil {
		m.t.Fatal(err)
	}
	for o := range slices.Values(m.orders) {
		if o.state == collected && !o.sold {
			o.sold = true // taken off below, with on hand as inventory has it
		}
	}
	for _, l := range res.GetLevels() {
		m.onHand[l.GetSku()] = l.GetOnHand()
	}
}
