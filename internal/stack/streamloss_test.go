package stack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// jetStreamOf connects to the running system's NATS server, for a test to act as an operator.
func jetStreamOf(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A stream deleted while every process stays connected (an operator's `nats stream rm`, a
// cleanup script, a stream reset to change a setting that cannot be edited) is declared again
// by the running system, and events flow. Before, streams were declared only at start and when
// the NATS connection came back: with the connection up all along, every relay round failed
// ("no responders") and every consumer failed to declare itself again, until each process was
// restarted by hand.
func TestEventsFlowAgainAfterTheStreamIsDeletedWhileConnected(t *testing.T) {
	r := stacktest.Start(t)
	js := jetStreamOf(t, r.NATSURL)
	if err := js.DeleteStream(t.Context(), streams.EventsStream); err != nil {
		t.Fatal(err)
	}
	createProduct(t, r, "After the delete", "AFTER-DEL-1")
	testenv.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		st, err := js.Stream(context.Background(), streams.EventsStream)
		if err != nil {
			return fmt.Errorf("the events stream after it was deleted: %w", err)
		}
		if st.CachedInfo().State.Msgs == 0 {
			return fmt.Errorf("the product's event is not in the stream yet")
		}
		for _, durable := range []string{"pos-adapter-order-events", "cart-rejected-orders", "fulfilment-store-states"} {
			if _, err := js.Consumer(context.Background(), streams.EventsStream, durable); err != nil {
				return fmt.Errorf("consumer %s after the stream was deleted: %w", durable, err)
			}
		}
		return nil
	})
}
