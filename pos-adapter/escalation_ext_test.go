package posadapter_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// hangingStores is inventory that, once hang is set, answers no GetStore (a hung or partitioned
// inventory: the call waits for its deadline); before, it is anyStore.
type hangingStores struct {
	anyStore
	hang *atomic.Bool
}

func (h hangingStores) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if h.hang.Load() && method == inventoryv1.StoreLocatorService_GetStore_FullMethodName {
		<-ctx.Done()
		return ctx.Err()
	}
	return h.anyStore.Invoke(ctx, method, args, reply, opts...)
}

// board is fulfilment as far as the escalation sweep asks it: ListStoreOrders of CONFIRMED
// orders answers with the ids marked waiting (the truth, whatever events were published);
// every other call goes on to the connection it wraps.
type board struct {
	grpc.ClientConnInterface
	mu      sync.Mutex
	waiting map[string][]string // store id → ids of its orders still CONFIRMED
	asked   atomic.Int32
}

func newBoard(next grpc.ClientConnInterface) *board {
	return &board{ClientConnInterface: next, waiting: map[string][]string{}}
}

func (b *board) wait(store, orderID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting[store] = append(b.waiting[store], orderID)
}

func (b *board) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if method != fulfilmentv1.StoreOrderService_ListStoreOrders_FullMethodName {
		return b.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	}
	b.asked.Add(1)
	r := args.(*fulfilmentv1.ListStoreOrdersRequest)
	if !slices.Equal(r.GetStates(), []fulfilmentv1.OrderState{fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED}) {
		return status.Errorf(codes.Unimplemented, "board answers only for CONFIRMED, asked %v", r.GetStates())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	res := reply.(*fulfilmentv1.ListStoreOrdersResponse)
	for _, id := range b.waiting[r.GetStoreId()] {
		res.Orders = append(res.Orders, &fulfilmentv1.Order{Id: id, StoreId: r.GetStoreId(), State: fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED})
	}
	return nil
}

// boardEnv runs the adapter with fulfilment's answers from a board, sweeping often, and store
// escalating after after.
func boardEnv(t *testing.T, store string, after time.Duration) (*env, *board) {
	fulfilment := newBoard(nil)
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		fulfilment.ClientConnInterface = c.Fulfilment
		c.Fulfilment = fulfilment
		c.EscalationInterval = 200 * time.Millisecond
	}))
	if _, err := e.admin().SetStoreSettings(context.Background(), req(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: store, EscalateAfter: durationpb.New(after)}})); err != nil {
		t.Fatal(err)
	}
	return e, fulfilment
}

// An order staff accepted in time is not escalated while the acceptance's event is still on its
// way (fulfilment's outbox not yet relayed, or a JetStream outage): the sweep asks fulfilment,
// whose tables are the truth, and clears the timer. Before, with every event published so far
// handled, the timer fired: "not accepted in time" for an order being prepared.
func TestAnOrderAcceptedBeforeItsEventArrivesIsNotEscalated(t *testing.T) {
	e, fulfilment := boardEnv(t, "lag-1", time.Second)
	ctx := context.Background()
	accepted, waiting := order("lag-1", 1), order("lag-1", 2)
	fulfilment.wait("lag-1", waiting.GetId()) // accepted: PREPARING at fulfilment, its event not sent
	for _, o := range []*fulfilmentv1.Order{accepted, waiting} {
		e.publish("confirmed", o, &fulfilmentv1.Transition{ToState: o.GetState(), Time: timestamppb.Now()})
	}
	testenv.CheckFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE kind = 'escalation' AND order_id = $1`, waiting.GetId()).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("the order still waiting at fulfilment has %d escalations; want 1", n)
		}
		return nil
	})
	var escalated int
	var cleared bool
	if err := e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tickets WHERE kind = 'escalation' AND order_id = $1),
		coalesce((SELECT cleared_time IS NOT NULL FROM escalation_timers WHERE order_id = $1), false)`, accepted.GetId()).Scan(&escalated, &cleared); err != nil {
		t.Fatal(err)
	}
	if escalated != 0 {
		t.Errorf("the order accepted at fulfilment (its event not yet here) was escalated as not accepted in time")
	}
	if !cleared {
		t.Errorf("the accepted order's timer was not cleared")
	}
	if fulfilment.asked.Load() == 0 {
		t.Error("the sweep never asked fulfilment")
	}
}

// An order event the adapter's consumer cannot handle yet (here: its store's feed row locked,
// as by a stuck transaction) holds the consumer's ack floor back. Stores' escalations are not
// held back with it while fulfilment answers which orders wait: before, every store's timer
// due after that event was published waited for it.
func TestEscalationsAreNotHeldBackByAnEventNotYetHandled(t *testing.T) {
	e, fulfilment := boardEnv(t, "held-1", 2*time.Second)
	ctx := context.Background()
	// stuck-1 gets a feed row, then a transaction holds it: its next ticket cannot be raised.
	first := order("stuck-1", 1)
	e.publish("confirmed", first, nil)
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE order_id = $1`, first.GetId()).Scan(&n); err != nil || n == 0 {
			return fmt.Errorf("stuck-1's first ticket not raised yet (%v)", err)
		}
		return nil
	})
	lock, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }()
	if _, err := lock.Exec(ctx, `SELECT 1 FROM store_feeds WHERE store_id = 'stuck-1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	o := order("held-1", 1)
	fulfilment.wait("held-1", o.GetId())
	e.publish("confirmed", o, nil)
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM escalation_timers WHERE order_id = $1`, o.GetId()).Scan(&n); err != nil || n == 0 {
			return fmt.Errorf("held-1's timer not set yet (%v)", err)
		}
		return nil
	})
	e.publish("confirmed", order("stuck-1", 2), nil) // waits on the lock, unacknowledged
	start := time.Now()
	testenv.CheckFor(t, 12*time.Second, 100*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE kind = 'escalation' AND order_id = $1`, o.GetId()).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%s on, held-1's order (store time 2 s) is not escalated while an event of stuck-1 waits", time.Since(start).Round(time.Second))
		}
		return nil
	})
}

// With inventory hung, a store's own escalations count plain time, as they do when it does not
// answer. The sweep asked for each due store's hours one after another (5 s each) inside its
// transaction: with 7 stores due, 35 s idle in transaction, past the pool's 30 s, and the
// sweep failed for ever, raising nothing. The hours are now asked all at once, before the
// timers are locked.
func TestEscalationsFireInPlainTimeWhileInventoryHangs(t *testing.T) {
	var hang atomic.Bool
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.Inventory = hangingStores{anyStore{deadConn(t)}, &hang} }))
	ctx := context.Background()
	const stores = 7
	for i := range stores {
		if _, err := e.admin().SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{
			Settings: &posv1.StoreSettings{StoreId: fmt.Sprintf("hang-%d", i), EscalateAfter: durationpb.New(time.Second)}})); err != nil {
			t.Fatal(err)
		}
	}
	hang.Store(true) // inventory stops answering
	var ids []string
	for i := range stores {
		o := order(fmt.Sprintf("hang-%d", i), 1)
		ids = append(ids, o.GetId())
		e.publish("confirmed", o, &fulfilmentv1.Transition{ToState: o.GetState(), Time: timestamppb.Now()})
	}
	start := time.Now()
	testenv.CheckFor(t, 30*time.Second, 500*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE kind = 'escalation' AND order_id = ANY($1)`, ids).Scan(&n); err != nil {
			return err
		}
		var timers int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM escalation_timers WHERE order_id = ANY($1)`, ids).Scan(&timers)
		if n != stores {
			return fmt.Errorf("%s after the orders were confirmed (store time 1s, inventory hung): %d of %d orders escalated, %d timers still waiting",
				time.Since(start).Round(time.Second), n, stores, timers)
		}
		return nil
	})
}

// While the sweep waits on a hung inventory, the consumer of order events goes on: a new order
// at another store reaches its terminals at once. The sweep used to hold its due timers locked
// while it waited, and the consumer's clearing of one (staff accepted it) waited on that lock,
// holding back every store's tickets behind it.
func TestANewOrderIsNotHeldBackWhileInventoryHangs(t *testing.T) {
	var hang atomic.Bool
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.Inventory = hangingStores{anyStore{deadConn(t)}, &hang} }))
	ctx := context.Background()
	const stores = 3
	for i := range stores {
		if _, err := e.admin().SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{
			Settings: &posv1.StoreSettings{StoreId: fmt.Sprintf("hold-%d", i), EscalateAfter: durationpb.New(time.Second)}})); err != nil {
			t.Fatal(err)
		}
	}
	_, cred := e.register("Counter", "fresh-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "fresh-1")
	defer f.close()
	hang.Store(true) // inventory stops answering
	var first *fulfilmentv1.Order
	for i := range stores {
		o := order(fmt.Sprintf("hold-%d", i), 1)
		if first == nil {
			first = o
		}
		e.publish("confirmed", o, &fulfilmentv1.Transition{ToState: o.GetState(), Time: timestamppb.Now()})
	}
	time.Sleep(3 * time.Second) // the timers are due; the sweep is waiting on inventory
	acc := then(first, fulfilmentv1.OrderState_ORDER_STATE_PREPARING)
	e.publish("preparing", acc, &fulfilmentv1.Transition{ToState: acc.GetState(), Time: timestamppb.Now()})
	time.Sleep(200 * time.Millisecond)
	fresh := order("fresh-1", 1)
	sent := time.Now()
	e.publish("confirmed", fresh, &fulfilmentv1.Transition{ToState: fresh.GetState(), Time: timestamppb.Now()})
	select {
	case tk := <-f.tickets:
		t.Logf("new order at fresh-1 reached its terminal after %s (%v)", time.Since(sent).Round(time.Millisecond), tk.GetKind())
		if d := time.Since(sent); d > 3*time.Second {
			t.Errorf("the new order at fresh-1 (a store without an escalation time) reached its terminal %s after it was confirmed", d.Round(time.Second))
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the new order at fresh-1 never reached its terminal within 40s")
	}
}

// A timer set before migration 00007 has no confirm_time; the sweep reads its confirmation as
// due_time - escalate_after. Moved past the store's closed hours, it keeps that confirmation:
// were only its due time moved, the confirmation read at the moved time would fall inside the
// closure, and the escalation would come that much late (here 5 minutes).
//
// Store: open all day except a closure of an hour that ended ~8-9 minutes ago (R). The order
// was confirmed 5 minutes before the closure began, the store escalates after 5 min + d, with
// d chosen so the right due time (5 open minutes before the closure, d after it) is 5 s from now.
func TestAnOldTimerMovedPastAClosureFiresWhenItsOpenTimeIsUp(t *testing.T) {
	var s services
	fulfilment := newBoard(nil) // the order, made up here, waits there
	e := newEnv(t, withServices(&s), withConfig(func(c *posadapter.Config) {
		fulfilment.ClientConnInterface = c.Fulfilment
		c.Fulfilment = fulfilment
	}))
	ctx := context.Background()
	zone, loc := noonZone(t)
	now := time.Now().In(loc)
	reopened := now.Truncate(time.Minute).Add(-8 * time.Minute) // R
	closed := reopened.Add(-time.Hour)                          // C
	confirmed := closed.Add(-5 * time.Minute)
	rightDue := now.Add(5 * time.Second)
	after := 5*time.Minute + rightDue.Sub(reopened)
	after = after.Truncate(time.Microsecond)
	rightDue = reopened.Add(after - 5*time.Minute)

	isoToday := int(now.Weekday())
	if isoToday == 0 {
		isoToday = 7
	}
	var weekly []*inventoryv1.OpeningHours
	for d := 1; d <= 7; d++ {
		if d == isoToday {
			weekly = append(weekly,
				&inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: "00:00", CloseTime: closed.Format("15:04")},
				&inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: reopened.Format("15:04"), CloseTime: "24:00"})
			continue
		}
		weekly = append(weekly, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: "00:00", CloseTime: "24:00"})
	}
	const store = "oldtimer-1"
	if _, err := s.inv.CreateStore(ctx, &inventoryv1.Store{
		Id: store, Name: "Store " + store, TimeZone: zone,
		Address:      &inventoryv1.Address{Line1: "1 Test St", City: "Seattle", CountryCode: "US"},
		Location:     &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33},
		OpeningHours: weekly,
		PrepTime:     durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin().SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: store, EscalateAfter: durationpb.New(after)}})); err != nil {
		t.Fatal(err)
	}
	// The timer as the build before migration 00007 set it: due at confirmation + escalate_after
	// in plain time, no confirm_time.
	o := order(store, 1)
	fulfilment.wait(store, o.GetId())
	payload, err := proto.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO escalation_timers (order_id, store_id, due_time, escalate_after, order_payload)
		VALUES ($1, $2, $3, $4::bigint * interval '1 microsecond', $5)`,
		o.GetId(), store, confirmed.Add(after), after.Microseconds(), payload); err != nil {
		t.Fatal(err)
	}
	t.Logf("confirmed %s, closed %s-%s, escalate after %s: due %s (now %s)", confirmed.Format("15:04:05"),
		closed.Format("15:04"), reopened.Format("15:04"), after, rightDue.Format("15:04:05"), now.Format("15:04:05"))

	time.Sleep(time.Until(rightDue))
	testenv.CheckFor(t, 15*time.Second, 200*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE order_id = $1 AND kind = 'escalation'`, o.GetId()).Scan(&n); err != nil {
			return err
		}
		if n == 1 {
			return nil
		}
		var due time.Time
		_ = e.pool.QueryRow(ctx, `SELECT due_time FROM escalation_timers WHERE order_id = $1`, o.GetId()).Scan(&due)
		return fmt.Errorf("not escalated %s after its store's open time was up (due %s); the timer is now due at %s",
			time.Since(rightDue).Round(time.Second), rightDue.Format("15:04:05"), due.In(loc).Format("15:04:05"))
	})
}

// The sweep does not sleep while escalations are due: a batch of timers only moved on (their
// store shut now) is work done, and the next batch follows at once. 500 timers of a shut store
// fell due before one of a store open round the clock; the open store's escalation came after
// one sweep interval per batch moved (here 3 s each, 18 s in all), not at the next sweep.
func TestAnOpenStoresEscalationIsNotHeldBackByAShutStoresTimers(t *testing.T) {
	var s services
	fulfilment := newBoard(nil)
	e := newEnv(t, withServices(&s), withConfig(func(c *posadapter.Config) {
		c.EscalationInterval = 3 * time.Second
		fulfilment.ClientConnInterface = c.Fulfilment
		c.Fulfilment = fulfilment
	}))
	ctx := context.Background()
	zone, loc := noonZone(t)
	local := time.Now().In(loc)
	var allDay, nightOnly []*inventoryv1.OpeningHours
	for d := 1; d <= 7; d++ {
		allDay = append(allDay, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: "00:00", CloseTime: "24:00"})
		nightOnly = append(nightOnly, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: "00:00", CloseTime: "01:00"})
	}
	for _, st := range []struct {
		id    string
		hours []*inventoryv1.OpeningHours
	}{{"shut-1", nightOnly}, {"open-1", allDay}} {
		if _, err := s.inv.CreateStore(ctx, &inventoryv1.Store{
			Id: st.id, Name: "Store " + st.id, TimeZone: zone,
			Address:      &inventoryv1.Address{Line1: "1 Test St", City: "Seattle", CountryCode: "US"},
			Location:     &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33},
			OpeningHours: st.hours,
			PrepTime:     durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(time.Hour),
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin().SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{
			Settings: &posv1.StoreSettings{StoreId: st.id, EscalateAfter: durationpb.New(time.Minute)}})); err != nil {
			t.Fatal(err)
		}
	}
	const shut = 500
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	insert := func(store string, n int, confirmed time.Time) string {
		o := order(store, n)
		payload, err := proto.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO escalation_timers (order_id, store_id, due_time, escalate_after, order_payload, confirm_time)
			VALUES ($1, $2, $3, interval '1 minute', $4, $5)`, o.GetId(), store, confirmed.Add(time.Minute), payload, confirmed); err != nil {
			t.Fatal(err)
		}
		return o.GetId()
	}
	for i := range shut {
		insert("shut-1", i, local.Add(-10*time.Minute).Add(time.Duration(i)*time.Millisecond))
	}
	openID := insert("open-1", 1, local.Add(-2*time.Minute))
	fulfilment.wait("open-1", openID)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE order_id = $1 AND kind = 'escalation'`, openID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("open-1's escalation never raised")
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	var stillDue int
	_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM escalation_timers WHERE store_id = 'shut-1' AND due_time <= now()`).Scan(&stillDue)
	t.Logf("open-1's escalation (due since a minute) raised %s after its timer was stored; shut-1 timers still due: %d", took.Round(10*time.Millisecond), stillDue)
	if took > 9*time.Second { // one interval, and some: three
		t.Errorf("open-1's escalation, due, was raised only %s later: the sweep slept a full interval after each batch of shut-1's timers it moved, with work due", took.Round(100*time.Millisecond))
	}
	if stillDue != 0 {
		t.Errorf("%d of shut-1's timers still due; want every one moved to its open hours", stillDue)
	}
}
