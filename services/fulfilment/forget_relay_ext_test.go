package fulfilment_test

import (
	"testing"
	"time"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// The outbox relay reads its rows without locking them (one relay holds the schema's advisory
// lock for a round: read, publish, delete). An erasure that rewrote an event between a round's
// read and its delete would see its rewrite deleted and the shopper's fields published: it waits
// for the round instead, by taking the same lock.
func TestForgetCustomerWaitsForTheRelayRoundUnderWay(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE", 10)
	o := e.mustPlace(checkout("c1", "k1", "s1", line{"LATTE", 1}), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	if _, err := e.orders.CancelOrder(e.asCustomer("c1"), &fulfilmentv1.CancelOrderRequest{OrderId: o.GetId(), Reason: "changed my mind"}); err != nil {
		t.Fatal(err)
	}

	// A relay round under way: it holds the lock, and has read the rows it will publish.
	round, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer round.Rollback(e.ctx) //nolint:errcheck // ended below
	if _, err := round.Exec(e.ctx, `SELECT pg_advisory_xact_lock(hashtext('handoff.outbox'), hashtext(current_schema()))`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.svc.ForgetCustomer(e.ctx, "c1")
		done <- err
	}()
	for waiting := false; !waiting; {
		select {
		case err := <-done:
			t.Fatalf("ForgetCustomer rewrote the outbox while a relay round held it (err %v): the round publishes what it read and deletes the rewrite", err)
		default:
		}
		if err := e.pool.QueryRow(e.ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := round.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ForgetCustomer after the round: %v", err)
	}
}
