package stack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
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
	tok, err := r.Keys.Issue(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(r.ServiceAddrs[stack.TargetCatalog], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	if _, err := catalogv1.NewCatalogAdminServiceClient(conn).CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
		Name: "After the delete", CategoryId: demo.Seattle().Categories[0].ID,
		Variants: []*catalogv1.Variant{{Sku: "AFTER-DEL-1", Name: "one", Price: &commonv1.Money{AmountMinor: 100, CurrencyCode: "USD"}}},
	}}); err != nil {
		t.Fatalf("create a product after the stream was deleted: %v", err)
	}
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
