package fulfilment_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// secondStoreClient serves a second fulfilment copy on e's schema (secondCopy) over gRPC, so
// staff calls land on two processes at once, as they do behind two pos-adapter copies.
func (e *env) secondStoreClient(configure ...func(*fulfilment.Config)) fulfilmentv1.StoreOrderServiceClient {
	e.t.Helper()
	srv := grpc.NewServer()
	e.secondCopy(configure...).RegisterGRPC(srv)
	return fulfilmentv1.NewStoreOrderServiceClient(testenv.GRPC(e.t, srv))
}

// Invariant 6 under concurrency: hundreds of wrong pickup codes for one order sent at once,
// through two copies of fulfilment (two terminals, two pos-adapters), get no more tries than
// PickupMaxWrong: the per-order count must hold when the guesses race, or a guesser who
// sends them all at once gets as many tries as he likes.
func TestHundredsOfConcurrentWrongPickupCodesGetNoMoreThanTheOrdersTries(t *testing.T) {
	const maxWrong = 5
	limits := func(c *fulfilment.Config) { c.PickupMaxWrong, c.PickupLockout = maxWrong, time.Hour }
	e := newEnv(t, envOptions{config: limits})
	other := e.secondStoreClient(limits)
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	right := e.codeOf("alice", o.GetId())

	const guesses = 300
	byCode := map[codes.Code]int{}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		gate = make(chan struct{})
	)
	for i := range guesses {
		code := fmt.Sprintf("%06d", 100000+i)
		if code == right {
			code = fmt.Sprintf("%06d", 900000+i)
		}
		client := e.store
		if i%2 == 1 {
			client = other
		}
		wg.Go(func() {
			<-gate
			_, err := client.HandOver(e.asStaff("s1"), &fulfilmentv1.HandOverRequest{StoreId: "s1", OrderId: o.GetId(), PickupCode: code})
			mu.Lock()
			byCode[status.Code(err)]++
			mu.Unlock()
		})
	}
	close(gate)
	wg.Wait()
	t.Logf("answers by code: %v", byCode)
	if byCode[codes.OK] != 0 {
		t.Fatalf("%d wrong codes handed the order over", byCode[codes.OK])
	}
	if byCode[codes.PermissionDenied] != maxWrong-1 || byCode[codes.ResourceExhausted] != guesses-(maxWrong-1) {
		t.Fatalf("answers %v; want %d wrong-code refusals and the rest locked (%d tries in all)", byCode, maxWrong-1, maxWrong)
	}
	// The lock starts the count again; it lasts the whole lockout from the fifth wrong code.
	var locked bool
	if err := e.pool.QueryRow(e.ctx, `SELECT pickup_locked_until > now() + interval '50 minutes' FROM orders WHERE id = $1`, o.GetId()).Scan(&locked); err != nil {
		t.Fatal(err)
	}
	if !locked {
		t.Errorf("order %s is not locked for the lockout", o.GetId())
	}
	_, err := e.handOver("s1", o.GetId(), right)
	wantCode(t, "right code while locked", err, codes.ResourceExhausted, "locked")
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "pickup_locked")
	if s := e.stateOf(o.GetId()); s != ready {
		t.Fatalf("order %s after the guesses, want READY", s)
	}
}

// Invariant 2 under concurrency on one hot SKU: a hundred ready orders of one SKU at one
// store are each, at the same moment, cancelled by staff at one copy and handed over at both
// (a retry), a third of them falling overdue for expiry too. Each ends exactly once; its hold is committed if
// it was collected and released otherwise, once; on hand went down by exactly what was
// collected; nothing stays reserved; inventory's books balance.
func TestAHundredOrdersOfAHotSKUEachEndOnceWhenCancelHandOverAndExpiryRace(t *testing.T) {
	e := newEnv(t, envOptions{})
	other := e.secondStoreClient()
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	const n, stock = 100, 150
	e.setStock("s1", "HOT-1", stock)

	orders := make([]*fulfilmentv1.Order, n)
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Go(func() {
			for {
				o, err := e.place(checkout(fmt.Sprintf("shopper-%d", i), "k", "s1", line{"HOT-1", 1}))
				switch {
				case err != nil:
					errs <- fmt.Errorf("place %d: %w", i, err)
					return
				case o.GetState() == fulfilmentv1.OrderState_ORDER_STATE_PENDING:
					time.Sleep(50 * time.Millisecond)
					continue
				case o.GetState() != confirmed:
					errs <- fmt.Errorf("place %d: %s", i, o.GetState())
					return
				}
				orders[i] = o
				break
			}
			if _, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: orders[i].GetId()}); err != nil {
				errs <- fmt.Errorf("accept %d: %w", i, err)
				return
			}
			if _, err := other.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: orders[i].GetId()}); err != nil {
				errs <- fmt.Errorf("ready %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	codesOf := make([]string, n)
	for i, o := range orders {
		codesOf[i] = e.codeOf(fmt.Sprintf("shopper-%d", i), o.GetId())
	}

	gate := make(chan struct{})
	var mu sync.Mutex
	bad := map[string]int{}
	note := func(what string, err error) {
		switch status.Code(err) {
		case codes.OK, codes.FailedPrecondition:
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if bad[what]++; bad[what] <= 3 {
			t.Errorf("%s: %v; want success or FailedPrecondition", what, err)
		}
	}
	for i, o := range orders {
		id := o.GetId()
		wg.Go(func() {
			<-gate
			_, err := e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: id, Reason: "race"})
			note("cancel", err)
		})
		for _, c := range []fulfilmentv1.StoreOrderServiceClient{other, e.store} {
			wg.Go(func() {
				<-gate
				_, err := c.HandOver(e.asStaff("s1"), &fulfilmentv1.HandOverRequest{StoreId: "s1", OrderId: id, PickupCode: codesOf[i]})
				note("hand over", err)
			})
		}
		if i%3 != 0 {
			continue // a third fall overdue too: the rest are raced by cancel and hand-over alone
		}
		wg.Go(func() {
			<-gate
			if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = now(), timer_at = now() WHERE id = $1 AND state = 4`, id); err != nil {
				note("expire", err)
			}
		})
	}
	close(gate)
	wg.Wait()

	final := map[fulfilmentv1.OrderState]int{}
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		clear(final)
		for _, o := range orders {
			switch s := e.stateOf(o.GetId()); s {
			case collected, cancelled, expired:
				final[s]++
			default:
				return fmt.Errorf("order %s is %s, want it ended", o.GetId(), s)
			}
		}
		return nil
	})
	t.Logf("outcomes: %v", final)
	e.waitNoEffects()
	var twice int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM (SELECT order_id FROM order_history WHERE to_state IN (5, 7, 8)
		GROUP BY order_id HAVING count(*) <> 1) x`).Scan(&twice); err != nil {
		t.Fatal(err)
	}
	if twice != 0 {
		t.Fatalf("%d orders ended other than once in their history", twice)
	}
	testenv.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		for _, o := range orders {
			want := map[string]int{"released": 1}
			if e.stateOf(o.GetId()) == collected {
				want = map[string]int{"committed": 1}
			}
			if got := e.holds(o.GetId()); !mapsEqual(got, want) {
				return fmt.Errorf("order %s (%s) holds %v, want %v", o.GetId(), e.stateOf(o.GetId()), got, want)
			}
		}
		return nil
	})
	if got, want := e.onHand("s1", "HOT-1"), int32(stock-final[collected]); got != want {
		t.Errorf("on hand %d after %d collected of %d, want %d", got, final[collected], stock, want)
	}
	if got, want := e.available("s1", "HOT-1"), int32(stock-final[collected]); got != want {
		t.Errorf("available %d, want %d: something stays reserved", got, want)
	}
	e.checkInvariants()
}
