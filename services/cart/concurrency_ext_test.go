package cart_test

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
)

func TestTwoDevicesRacingAtOneVersionOneWinsTheOtherIsAbortedAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	phoneSKU, _ := e.sku(0)
	laptopSKU, _ := e.sku(1)
	for round := range 10 {
		c := e.newCart("alice")
		if round%2 == 1 {
			c = e.addLine("alice", c.GetId(), phoneSKU, 1) // a race that raises a line, not adds one
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var carts [2]*cartv1.Cart
		var errs [2]error
		for i, sku := range []string{phoneSKU, laptopSKU} {
			wg.Go(func() {
				<-start
				res, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 2, ExpectedVersion: c.GetVersion()})
				carts[i], errs[i] = res.GetCart(), err
			})
		}
		close(start)
		wg.Wait()

		winner, loser := 0, 1
		if errs[0] != nil {
			winner, loser = 1, 0
		}
		if errs[winner] != nil {
			t.Fatalf("round %d: both devices refused: %v / %v", round, errs[0], errs[1])
		}
		wantCode(t, "the losing device", errs[loser], codes.Aborted, "expected_version")
		won := carts[winner]
		if won.GetVersion() != c.GetVersion()+1 {
			t.Fatalf("round %d: winner's cart at version %d, want %d", round, won.GetVersion(), c.GetVersion()+1)
		}
		// The cart is exactly what the winner was shown: the loser changed nothing.
		if got := e.get("alice", c.GetId()); !proto.Equal(got, won) {
			t.Fatalf("round %d: cart after the race:\n got  %v\n want %v", round, got, won)
		}
	}
}

func TestManyConcurrentAddsWithoutVersionAllLandWithExactQuantities(t *testing.T) {
	e := newEnv(t)
	c := e.newCart("alice")
	const (
		writers = 24
		skus    = 3
	)
	want := map[string]int32{}
	var wg sync.WaitGroup
	for i := range writers {
		sku, _ := e.sku(i % skus)
		qty := int32(1 + i%4)
		want[sku] += qty
		wg.Go(func() {
			if _, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: qty}); err != nil {
				t.Errorf("AddLine %s x%d: %v", sku, qty, status.Convert(err).Message())
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	got := e.get("alice", c.GetId())
	if len(got.GetLines()) != skus {
		t.Fatalf("cart has %d lines, want %d: %v", len(got.GetLines()), skus, got.GetLines())
	}
	seen := map[string]bool{}
	for _, l := range got.GetLines() {
		if seen[l.GetSku()] {
			t.Fatalf("sku %s has two lines: %v", l.GetSku(), got.GetLines())
		}
		seen[l.GetSku()] = true
		if l.GetQuantity() != want[l.GetSku()] {
			t.Fatalf("line %s has %d, want %d (every add counted once)", l.GetSku(), l.GetQuantity(), want[l.GetSku()])
		}
	}
	if got.GetVersion() != c.GetVersion()+writers {
		t.Fatalf("version %d after %d changes from %d; want %d (each change once)", got.GetVersion(), writers, c.GetVersion(), c.GetVersion()+writers)
	}
}

// An edit whose write was stored but whose reply was lost (COMMIT's reply, or a timeout as it
// landed) counts once: alone it is not reported failed, and in a batch that is reported failed
// and run again one by one it is not applied a second time (adding a line twice doubled it).
func TestEditsWhoseRepliesAreLostCountOnce(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	// Alone.
	c := e.newCart("alice")
	e.cart.LoseEditReplies(1)
	res, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1})
	if err != nil || len(res.GetCart().GetLines()) != 1 || res.GetCart().GetLines()[0].GetQuantity() != 1 {
		t.Fatalf("AddLine whose reply was lost: %v, %v; want the line stored once", res.GetCart().GetLines(), err)
	}
	// Many carts at once, so that edits share batches, the first three batches' replies lost.
	const shoppers = 24
	carts := make([]*cartv1.Cart, shoppers)
	for i := range carts {
		carts[i] = e.newCart(fmt.Sprintf("shopper-%d", i))
	}
	e.cart.LoseEditReplies(3)
	var wg sync.WaitGroup
	for i, c := range carts {
		wg.Go(func() {
			if _, err := e.client.AddLine(e.as(fmt.Sprintf("shopper-%d", i)), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1}); err != nil {
				t.Errorf("AddLine for shopper %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i, c := range carts {
		got := e.get(fmt.Sprintf("shopper-%d", i), c.GetId())
		if len(got.GetLines()) != 1 || got.GetLines()[0].GetQuantity() != 1 || got.GetVersion() != c.GetVersion()+1 {
			t.Errorf("shopper %d's cart: %v at version %d; want one line of 1, written once (version %d)", i, got.GetLines(), got.GetVersion(), c.GetVersion()+1)
		}
	}
}

// cartToCheckOut is a new cart of customer's with one line and a pickup near a point, and its
// version.
func (e *env) cartToCheckOut(customer string) (*cartv1.Cart, int64) {
	e.t.Helper()
	sku, _ := e.sku(0)
	c := e.newCart(customer)
	c = e.addLine(customer, c.GetId(), sku, 1)
	res, err := e.client.SetPickup(e.as(customer), &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.GetCart(), res.GetCart().GetVersion()
}

// Two claims of one cart under one key in one batch, one naming the cart's version and one a
// stale version: the claim goes to the request whose version matched, never to the stale one.
func TestABatchedClaimGoesToTheRequestWhoseVersionMatched(t *testing.T) {
	e := newEnv(t)
	c, v := e.cartToCheckOut("alice")
	got, err := e.cart.ClaimTogether(t.Context(), c.GetId(), "alice", "key-same-for-both", v-1, v)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != -1 || got[1] != v {
		t.Fatalf("claims (stale version %d, current %d) took %v; want only the current one's", v-1, v, got)
	}
}
