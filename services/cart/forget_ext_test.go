package cart_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/personal"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// An erasure deletes the shopper's carts, open or checked out, but not one whose checkout is
// under way: its order may be written, CONFIRMED and holding stock already, and deleting the
// cart would fail the checkout (and every retry of it) with NotFound. Other shoppers' carts stay.
func TestAnErasureKeepsTheCartBeingCheckedOut(t *testing.T) {
	var js jetstream.JetStream
	e := newEnv(t, func(c *cart.Config) {
		var err error
		if js, err = jetstream.New(c.NATS); err != nil {
			t.Fatal(err)
		}
		c.JS = js
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.cart.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cartOf := func(customer string) string {
		t.Helper()
		res, err := e.client.CreateCart(e.as(customer), &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: "LATTE-16", Quantity: 1}}})
		if err != nil {
			t.Fatalf("create a cart of %s: %v", customer, err)
		}
		return res.GetCart().GetId()
	}
	idle, checkingOut, lapsed, others := cartOf("erin"), cartOf("erin"), cartOf("erin"), cartOf("sam")
	for id, until := range map[string]string{checkingOut: "now() + interval '1 minute'", lapsed: "now() - interval '1 minute'"} {
		if _, err := e.pool.Exec(t.Context(), `UPDATE carts SET checkout_key = 'erasure-test', checkout_until = `+until+` WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}

	data, err := proto.Marshal(&fulfilmentv1.CustomerForgotten{CustomerId: "erin"})
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(personal.ForgottenSubject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, "erasure-of-erin")
	msg.Header.Set(outbox.EventTypeHeader, "handoff.fulfilment.v1.CustomerForgotten")
	msg.Header.Set(outbox.OccurredAtHeader, time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}

	exists := func(id string) bool {
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM carts WHERE id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	testenv.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if exists(idle) || exists(lapsed) {
			return fmt.Errorf("erin's idle cart or the one whose checkout lease lapsed is still there")
		}
		return nil
	})
	if !exists(checkingOut) {
		t.Error("erin's cart being checked out was deleted: its checkout would fail with its order written")
	}
	if !exists(others) {
		t.Error("sam's cart was deleted by erin's erasure")
	}
}
