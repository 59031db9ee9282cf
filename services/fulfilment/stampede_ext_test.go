package fulfilment_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Hundreds of shoppers check out one unit each of one hot SKU at once, through two copies of
// fulfilment, while some retry their checkout with the same key and the first 5 confirmed
// cancel at once (giving units back for others to take). Units left to promise: 12 on
// hand less a safety stock of 2. Whatever the interleaving: never more than 10 units promised
// at once, one order per key, a rejected order holds nothing, no order is left PENDING, every
// confirmed order's event is published once, and inventory's books balance.
func TestAStampedeOnOneHotSKUThroughCheckoutNeverOversells(t *testing.T) {
	e := newEnv(t, envOptions{copies: 2})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	const onHand, safety = 12, 2
	if _, _, err := e.inv.SetStock(e.ctx, &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "test"},
		&inventoryv1.SetStockRequest{StoreId: "s1", Sku: "HOT-1", OnHand: onHand, SafetyStock: safety, IdempotencyKey: "stampede-stock"}); err != nil {
		t.Fatal(err)
	}

	const shoppers, retriers, cancellers = 250, 30, 5
	key := func(i int) string { return fmt.Sprintf("stampede-%d", i) }
	// spread is when shopper i checks out: over 250 ms, so units cancelled early are there for
	// later checkouts.
	spread := func(i int) time.Duration { return time.Duration(i%50) * 5 * time.Millisecond }
	// place checks out as a cart does: again with the same key until it has an answer, and
	// again while the order is PENDING (a reserve slower than fulfilment waits, on a busy
	// machine), until it is settled.
	place := func(i int) *fulfilmentv1.Order {
		for {
			o, err := e.place(checkout(fmt.Sprintf("shopper-%d", i), key(i), "s1", line{"HOT-1", 1}))
			switch {
			case err == nil && o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_PENDING:
				return o
			case e.ctx.Err() != nil || t.Context().Err() != nil:
				return nil
			case err != nil:
				t.Logf("checkout %d: %v; again with its key", i, err)
			default:
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	answers := make([]*fulfilmentv1.Order, shoppers)
	var cancelled, toCancel atomic.Int32
	toCancel.Store(cancellers)
	var wg sync.WaitGroup
	for i := range shoppers {
		wg.Go(func() {
			time.Sleep(spread(i))
			o := place(i)
			answers[i] = o
			if o.GetState() == confirmed && toCancel.Add(-1) >= 0 {
				if _, err := e.orders.CancelOrder(e.asCustomer(fmt.Sprintf("shopper-%d", i)), &fulfilmentv1.CancelOrderRequest{OrderId: o.GetId(), Reason: "changed my mind"}); err != nil {
					t.Errorf("cancel order %s: %v", o.GetId(), err)
					return
				}
				cancelled.Add(1)
			}
		})
	}
	retried := make([]*fulfilmentv1.Order, retriers)
	for i := range retriers {
		// At the same moment as the first call with that key, so the two race.
		wg.Go(func() { time.Sleep(spread(shoppers - 1 - i)); retried[i] = place(shoppers - 1 - i) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// A retry answers with its key's order.
	for i, o := range retried {
		if got := answers[shoppers-1-i]; o.GetId() != got.GetId() {
			t.Errorf("key %s answered order %s to one call and %s to another", key(shoppers-1-i), got.GetId(), o.GetId())
		}
	}
	var orders, keys int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*), count(DISTINCT (customer_id, idempotency_key)) FROM orders`).Scan(&orders, &keys); err != nil {
		t.Fatal(err)
	}
	if orders != shoppers || keys != shoppers {
		t.Fatalf("%d orders for %d keys, want one per key (%d)", orders, keys, shoppers)
	}

	var nConfirmed, nRejected, wrong int
	for i, o := range answers {
		switch o.GetState() {
		case confirmed:
			nConfirmed++
		case rejected:
			nRejected++
			// A same-key call still in flight may have placed a hold after the refusal
			// (units cancelled meanwhile); fulfilment gives that back as soon as its answer
			// finds the order rejected: released, never open or sold.
			if h := e.holds(o.GetId()); (h["open"] != 0 || h["committed"] != 0) && wrong < 5 {
				wrong++
				t.Errorf("rejected order %s (key %s) holds %v", o.GetId(), key(i), h)
			}
		default:
			if wrong++; wrong > 5 {
				t.FailNow()
			}
			t.Errorf("checkout %d answered %s, want CONFIRMED or REJECTED", i, o.GetState())
		}
	}
	if nConfirmed-int(cancelled.Load()) > onHand-safety {
		t.Fatalf("%d orders confirmed and %d cancelled: %d units promised of %d", nConfirmed, cancelled.Load(), nConfirmed-int(cancelled.Load()), onHand-safety)
	}
	if nConfirmed == 0 || nRejected == 0 {
		t.Fatalf("%d confirmed and %d rejected: the stampede did not meet the limit", nConfirmed, nRejected)
	}
	t.Logf("%d checkouts: %d confirmed (%d of them cancelled at once), %d rejected", shoppers, nConfirmed, cancelled.Load(), nRejected)

	// Nothing left PENDING, and what is held is what the open orders ordered: a reserve that
	// landed after its order ended is given back within LateReserve of its timeout.
	testenv.CheckFor(t, 40*time.Second, 20*time.Millisecond, func() error {
		var pending int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders WHERE state = $1`, int16(fulfilmentv1.OrderState_ORDER_STATE_PENDING)).Scan(&pending); err != nil {
			return err
		}
		var open, held int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders WHERE state = $1`, int16(confirmed)).Scan(&open); err != nil {
			return err
		}
		if err := e.invPool.QueryRow(e.ctx, `SELECT count(*) FROM holds WHERE state = 'open'`).Scan(&held); err != nil {
			return err
		}
		if pending != 0 || held != open {
			return fmt.Errorf("%d orders PENDING; %d open holds for %d open orders", pending, held, open)
		}
		return nil
	})
	// At no moment was more promised than on hand less safety stock: the ledger's level after
	// each hold placed says so.
	var over int
	if err := e.invPool.QueryRow(e.ctx, `SELECT count(*) FROM movements
		WHERE kind = 'hold_placed' AND reserved_after > on_hand_after - safety_stock_after`).Scan(&over); err != nil {
		t.Fatal(err)
	}
	if over != 0 {
		t.Fatalf("%d holds placed beyond on hand less safety stock", over)
	}
	e.checkInvariants()

	// Each confirmed order's event, once in the stream (a relay publishing one again is
	// dropped there as a duplicate).
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := e.storedEvents(streams.EventSubject("fulfilment", "order", "confirmed")); n != uint64(nConfirmed) {
			return fmt.Errorf("%d confirmed events stored for %d confirmed orders", n, nConfirmed)
		}
		for _, o := range answers {
			if o.GetState() == confirmed && !slices.Contains(e.events.of(o.GetId()), "confirmed") {
				return fmt.Errorf("order %s: no confirmed event published", o.GetId())
			}
		}
		return nil
	})
}
