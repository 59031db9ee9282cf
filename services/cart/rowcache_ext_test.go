package cart_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// cartStatements counts the statements that read a cart row, those that store edits, and
// those that insert new carts.
type cartStatements struct{ reads, edits, creates atomic.Int64 }

func (r *cartStatements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	sql := strings.TrimSpace(data.SQL)
	switch {
	case strings.HasPrefix(sql, "SELECT") && strings.Contains(sql, "FROM carts WHERE id = $1"):
		r.reads.Add(1)
	case strings.HasPrefix(sql, "UPDATE carts SET lines"):
		r.edits.Add(1)
	case strings.HasPrefix(sql, "INSERT INTO carts"):
		r.creates.Add(1)
	}
	return ctx
}

func (r *cartStatements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// copyOfCart starts another copy of the cart service on e's database, its statements over
// cart rows counted, and returns a client of it.
func copyOfCart(t *testing.T, e *env) (cartv1.CartServiceClient, *cartStatements) {
	t.Helper()
	cfg := e.pool.Config()
	counted := &cartStatements{}
	cfg.ConnConfig.Tracer = counted
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	svc := cart.New(cart.Config{Pool: pool, NATS: e.natsConn(), Currency: "USD", Logger: testenv.Logger(t),
		CheckoutTimeout: 10 * time.Second, LookupTimeout: 2 * time.Second, CacheTTL: time.Hour})
	srv := grpc.NewServer()
	svc.RegisterGRPC(srv)
	return cartv1.NewCartServiceClient(testenv.GRPC(t, srv)), counted
}

// A copy of the service that wrote a cart starts the shopper's next edits from the cart as it
// wrote it, without reading the row again.
func TestEditsStartFromTheCartAsThisCopyWroteIt(t *testing.T) {
	e := newEnv(t)
	client, reads := copyOfCart(t, e)
	ctx := e.as("alice")
	c, err := client.CreateCart(ctx, &cartv1.CreateCartRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		sku, _ := e.sku(i)
		if _, err := client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetCart().GetId(), Sku: sku, Quantity: 1}); err != nil {
			t.Fatalf("AddLine %s: %v", sku, err)
		}
	}
	if n := reads.reads.Load(); n != 0 {
		t.Errorf("three edits after the creation read the cart row %d times, want 0", n)
	}
	if got := e.get("alice", c.GetCart().GetId()); len(got.GetLines()) != 3 || got.GetVersion() != 4 {
		t.Errorf("stored cart: %d lines at version %d, want 3 at version 4", len(got.GetLines()), got.GetVersion())
	}
}

// A copy's remembered cart goes stale when another copy changes the cart. Its next edit then
// applies to the stored cart, and a refusal is the stored cart's: an expected_version the
// stored cart has is accepted, and one it has moved past is refused, changing nothing.
func TestAStaleRememberedCartIsCaughtByItsVersion(t *testing.T) {
	e := newEnv(t)
	copyA, _ := copyOfCart(t, e)
	copyB := e.client
	ctx := e.as("alice")
	skus := make([]string, 4)
	for i := range skus {
		skus[i], _ = e.sku(i)
	}
	res, err := copyA.CreateCart(ctx, &cartv1.CreateCartRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetCart().GetId()
	if _, err := copyA.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[0], Quantity: 1}); err != nil {
		t.Fatal(err) // copy A remembers version 2
	}
	fromB, err := copyB.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[1], Quantity: 1})
	if err != nil {
		t.Fatal(err) // the stored cart is at version 3 now
	}

	// The device that saw copy B's answer edits through copy A, which remembers version 2.
	got, err := copyA.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[2], Quantity: 1, ExpectedVersion: fromB.GetCart().GetVersion()})
	if err != nil {
		t.Fatalf("an edit at the stored version through the copy that remembered an older one: %v", err)
	}
	if v, n := got.GetCart().GetVersion(), len(got.GetCart().GetLines()); v != 4 || n != 3 {
		t.Errorf("after it: version %d with %d lines, want 4 with 3 (nothing of copy B's edit lost)", v, n)
	}

	// Copy B moves the cart on again; a device that knows only version 4, which copy A
	// remembers, is refused by copy A as the stored cart would refuse it, and nothing changes.
	if _, err := copyB.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[0], Quantity: 1}); err != nil {
		t.Fatal(err) // version 5
	}
	_, err = copyA.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[3], Quantity: 1, ExpectedVersion: 4})
	wantCode(t, "an edit at a version the cart has moved past", err, codes.Aborted, "expected_version")
	if stored := e.get("alice", id); stored.GetVersion() != 5 || len(stored.GetLines()) != 3 {
		t.Errorf("after the refusal the cart is at version %d with %d lines, want 5 with 3", stored.GetVersion(), len(stored.GetLines()))
	}
}

// Concurrent edits of different carts are stored together, each on its own conditions: every
// edit lands once, in fewer statements than edits.
func TestConcurrentEditsOfDifferentCartsAreStoredTogether(t *testing.T) {
	e := newEnv(t)
	client, counted := copyOfCart(t, e)
	const carts = 32
	ids := cartsOfShoppers(t, e, client, carts)
	sku, _ := e.sku(0)
	for i, err := range addAtOnce(e, client, ids, sku) {
		if err != nil {
			t.Errorf("AddLine to cart %d: %v", i, err)
		}
	}
	if n := counted.edits.Load(); n >= carts {
		t.Errorf("%d concurrent edits of different carts took %d statements, want fewer", carts, n)
	} else {
		t.Logf("%d concurrent edits of different carts stored in %d statements", carts, n)
	}
	for i, id := range ids {
		got := e.get(shopper(i), id)
		if got.GetVersion() != 2 || len(got.GetLines()) != 1 || got.GetLines()[0].GetQuantity() != int32(1+i%3) {
			t.Errorf("cart %d: version %d, lines %v; want version 2 with its one line of %d", i, got.GetVersion(), got.GetLines(), 1+i%3)
		}
	}
}

// An edit the database refuses (here a trigger, standing in for any failure of one row) fails
// alone: the batch it was in is written again edit by edit, so the other carts' edits land and
// the refused cart is left as it was.
func TestAnEditTheDatabaseRefusesFailsAloneAndTheOthersLand(t *testing.T) {
	e := newEnv(t)
	client, _ := copyOfCart(t, e)
	const carts = 16
	ids := cartsOfShoppers(t, e, client, carts)
	refused := ids[carts/2]
	e.refuseRows(t, "UPDATE", "NEW.id = '"+refused+"'")
	sku, _ := e.sku(0)
	errs := addAtOnce(e, client, ids, sku)
	for i, id := range ids {
		got := e.get(shopper(i), id)
		if id == refused {
			if errs[i] == nil || got.GetVersion() != 1 || len(got.GetLines()) != 0 {
				t.Errorf("the refused cart's edit: %v, cart at version %d with %d lines; want an error and the cart unchanged", errs[i], got.GetVersion(), len(got.GetLines()))
			}
			continue
		}
		if errs[i] != nil || got.GetVersion() != 2 || len(got.GetLines()) != 1 {
			t.Errorf("cart %d: %v, at version %d with %d lines; want its edit stored", i, errs[i], got.GetVersion(), len(got.GetLines()))
		}
	}
}

// shopper is the i-th customer of the concurrent-edit tests.
func shopper(i int) string { return fmt.Sprintf("shopper-%d", i) }

// cartsOfShoppers creates one cart for each of n shoppers through client and returns their ids.
func cartsOfShoppers(t *testing.T, e *env, client cartv1.CartServiceClient, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		res, err := client.CreateCart(e.as(shopper(i)), &cartv1.CreateCartRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = res.GetCart().GetId()
	}
	return ids
}

// addAtOnce adds sku to every cart of ids at the same moment, shopper i i%3+1 units, and
// returns each call's error.
func addAtOnce(e *env, client cartv1.CartServiceClient, ids []string, sku string) []error {
	errs := make([]error, len(ids))
	atOnce(len(ids), func(i int) {
		_, errs[i] = client.AddLine(e.as(shopper(i)), &cartv1.AddLineRequest{CartId: ids[i], Sku: sku, Quantity: int32(1 + i%3)})
	})
	return errs
}

// atOnce makes n calls at the same moment and returns when all have.
func atOnce(n int, call func(i int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { <-start; call(i) })
	}
	close(start)
	wg.Wait()
}

// refuseRows makes the database refuse every write of event ("INSERT", "UPDATE") on carts
// whose new row meets condition (a trigger, standing in for any failure of one row).
func (e *env) refuseRows(t *testing.T, event, condition string) {
	t.Helper()
	for _, sql := range []string{
		`CREATE FUNCTION refuse_rows() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF ` + condition + ` THEN RAISE EXCEPTION 'this row is refused'; END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER refuse_rows BEFORE ` + event + ` ON carts FOR EACH ROW EXECUTE FUNCTION refuse_rows()`,
	} {
		if _, err := e.pool.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}
