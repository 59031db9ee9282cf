package cart_test

import (
	"testing"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
)

// createAtOnce creates one cart for each of n shoppers at the same moment and returns each
// call's cart and error.
func createAtOnce(e *env, client cartv1.CartServiceClient, n int) ([]*cartv1.Cart, []error) {
	carts, errs := make([]*cartv1.Cart, n), make([]error, n)
	atOnce(n, func(i int) {
		res, err := client.CreateCart(e.as(shopper(i)), &cartv1.CreateCartRequest{})
		carts[i], errs[i] = res.GetCart(), err
	})
	return carts, errs
}

// Concurrent new carts are inserted together: each shopper gets a cart of its own, stored and
// empty, in fewer statements than carts.
func TestConcurrentNewCartsAreInsertedTogether(t *testing.T) {
	e := newEnv(t)
	client, counted := copyOfCart(t, e)
	const n = 32
	carts, errs := createAtOnce(e, client, n)
	seen := map[string]bool{}
	for i, c := range carts {
		if errs[i] != nil {
			t.Fatalf("CreateCart for shopper %d: %v", i, errs[i])
		}
		if c.GetId() == "" || seen[c.GetId()] {
			t.Fatalf("shopper %d got cart %q: want a new id of its own", i, c.GetId())
		}
		seen[c.GetId()] = true
		if c.GetVersion() != 1 || len(c.GetLines()) != 0 {
			t.Errorf("shopper %d's new cart: version %d, %d lines; want version 1, empty", i, c.GetVersion(), len(c.GetLines()))
		}
		// Stored, and its owner's: the shopper reads it back; another shopper cannot.
		if got := e.get(shopper(i), c.GetId()); got.GetId() != c.GetId() {
			t.Errorf("shopper %d cannot read back cart %s", i, c.GetId())
		}
		if _, err := client.GetCart(e.as(shopper(i+1)), &cartv1.GetCartRequest{CartId: c.GetId()}); err == nil {
			t.Errorf("shopper %d read shopper %d's cart %s", i+1, i, c.GetId())
		}
	}
	if got := counted.creates.Load(); got >= n {
		t.Errorf("%d concurrent new carts took %d INSERTs, want fewer", n, got)
	} else {
		t.Logf("%d concurrent new carts inserted in %d statements", n, got)
	}
}

// A new cart the database refuses (a trigger, standing in for any failure of one row) fails
// alone: its batch is inserted again cart by cart, and the other shoppers get theirs.
func TestANewCartTheDatabaseRefusesFailsAlone(t *testing.T) {
	e := newEnv(t)
	client, _ := copyOfCart(t, e)
	const n = 16
	refused := shopper(n / 2)
	e.refuseRows(t, "INSERT", "NEW.customer_id = '"+refused+"'")
	carts, errs := createAtOnce(e, client, n)
	for i, c := range carts {
		if shopper(i) == refused {
			if errs[i] == nil {
				t.Errorf("the refused shopper got cart %s", c.GetId())
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("shopper %d: %v; want its cart", i, errs[i])
			continue
		}
		if got := e.get(shopper(i), c.GetId()); got.GetId() != c.GetId() {
			t.Errorf("shopper %d's cart %s is not stored", i, c.GetId())
		}
	}
	var stored int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM carts WHERE customer_id = $1`, refused).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Errorf("the refused shopper has %d carts stored, want 0", stored)
	}
}

// A new cart written again alone after its batch committed with the answer lost (a dropped
// connection, a timeout) is the cart stored: the id is the call's own. Under another
// customer the id is still refused.
func TestANewCartWrittenAgainAfterItsBatchCommittedIsTheStoredOne(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.CreateCart(e.as("shopper-a"), &cartv1.CreateCartRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetCart().GetId()
	got, version, err := e.cart.InsertCartAlone(t.Context(), id, "shopper-a")
	if err != nil || got != id || version != 1 {
		t.Fatalf("writing cart %s again: %q at version %d, %v; want the stored cart", id, got, version, err)
	}
	if _, _, err := e.cart.InsertCartAlone(t.Context(), id, "shopper-b"); err == nil {
		t.Fatalf("another customer's write of cart %s succeeded", id)
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM carts WHERE id = $1 AND customer_id = 'shopper-a'`, id).Scan(&n); err != nil || n != 1 {
		t.Fatalf("cart %s stored %d times (%v), want once, shopper-a's", id, n, err)
	}
}
