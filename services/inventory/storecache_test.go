package inventory_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// startRelay relays the schema's outbox to JetStream, as the stack does beside every service.
func (e *env) startRelay() {
	t := e.t
	ctx, cancel := context.WithCancel(context.Background())
	js, err := jetstream.New(testenv.NATSConn(t, e.ns))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = outbox.NewRelay(e.pool, js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// findAt asks one copy for the stores around (lat, lng) accepting orders now.
func findAt(t *testing.T, svc *inventory.Service, lat, lng float64) []string {
	t.Helper()
	res, err := svc.FindStores(t.Context(), &inventoryv1.FindStoresRequest{Location: &commonv1.LatLng{Latitude: lat, Longitude: lng}, RadiusMeters: 5000})
	if err != nil {
		t.Fatal(err)
	}
	return storeIDs(res.GetStores())
}

func storeIDs(ms []*inventoryv1.StoreMatch) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.GetStore().GetId())
	}
	return out
}

// eventually polls fn until it is true, failing after within.
func eventually(t *testing.T, within time.Duration, what string, fn func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !fn() {
		if time.Since(start) > within {
			t.Fatalf("%s: not seen within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// Store changes made through the admin API of one copy reach another copy's locator and
// reserves through the store events, long before that copy's safety-net check (an hour here)
// could have found them.
func TestStoreChangesAtOneCopyReachAnotherThroughTheirEvents(t *testing.T) {
	e := newEnv(t)
	e.startRelay()
	other := e.addCopy(withStoreCacheMaxAge(time.Hour))
	for _, id := range []string{"s1", "s2"} {
		e.createStore(storeAt(id, 47.61, -122.33))
		e.setStock(id, "LATTE", 100, 0)
	}
	near := func(id string) *inventoryv1.ReserveHoldsRequest {
		req := order(id, "", "LATTE", 1)
		req.Near = &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}
		return req
	}
	reserveAt := func(req *inventoryv1.ReserveHoldsRequest) *inventoryv1.ReserveHoldsResponse {
		t.Helper()
		res, err := other.ReserveHolds(e.ctx(), req)
		if err != nil {
			t.Fatalf("reserve %s at the other copy: %v", req.GetOrderId(), err)
		}
		return res
	}
	// The other copy has both stores cached from now on.
	if got := findAt(t, other, 47.61, -122.33); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Fatalf("stores at the other copy: %v", got)
	}
	const prompt = 5 * time.Second // far below the hour of the safety net

	// A new store: only the event can tell the other copy's locator (it has no row to miss).
	e.createStore(storeAt("s3", 47.62, -122.33))
	e.setStock("s3", "LATTE", 100, 0)
	took := eventually(t, prompt, "new store s3 in the other copy's locator", func() bool {
		return slices.Contains(findAt(t, other, 47.62, -122.33), "s3")
	})
	t.Logf("new store seen by the other copy after %v", took)

	// Closed: the other copy's reserves at it and its locator stop at once the event is in.
	if _, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood"}); err != nil {
		t.Fatal(err)
	}
	n := 0
	took = eventually(t, prompt, "s1 closed at the other copy", func() bool {
		n++
		res := reserveAt(order(fmt.Sprintf("at-s1-%d", n), "s1", "LATTE", 1))
		return res.GetOutcome() == unavailable && strings.Contains(res.GetMessage(), "closed: flood")
	})
	t.Logf("closed store refused by the other copy after %v", took)
	if got := findAt(t, other, 47.61, -122.33); slices.Contains(got, "s1") {
		t.Errorf("the other copy's locator still lists closed s1: %v", got)
	}

	// New hours (never open): the store drops out of the other copy's locator and reserves.
	st := storeAt("s2", 47.61, -122.33)
	st.OpeningHours = nil
	if _, err := e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: st, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"opening_hours"}}}); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, prompt, "s2's new hours at the other copy", func() bool {
		return !slices.Contains(findAt(t, other, 47.61, -122.33), "s2")
	})
	t.Logf("new hours honoured by the other copy after %v", took)
	if res := reserveAt(order("at-s2", "s2", "LATTE", 1)); res.GetOutcome() != unavailable || !strings.Contains(res.GetMessage(), "outside its opening hours") {
		t.Errorf("reserve at s2 after its hours changed: %v", res)
	}
	// The nearest store that still takes orders is s3.
	if res := reserveAt(near("near-1")); res.GetOutcome() != reserved || res.GetStoreId() != "s3" {
		t.Errorf("nearest reserve at the other copy: %v; want s3", res)
	}
	e.requireInvariants()
}

// Whatever the events do, the store cache is never used past its bound: a store closed, or
// deleted, behind the service's back (no event at all) stops taking orders at every copy no
// later than StoreCacheMaxAge after the change.
func TestStoreCacheNeverOutlivesItsBound(t *testing.T) {
	const bound = 300 * time.Millisecond
	e := newEnv(t, withStoreCacheMaxAge(bound))
	other := e.addCopy(withStoreCacheMaxAge(bound))
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 1000, 0)
	e.createStore(storeAt("gone", 47.611, -122.33)) // no stock: it can be deleted
	svcs := []*inventory.Service{e.copies[0], other}
	for _, svc := range svcs {
		if got := findAt(t, svc, 47.61, -122.33); !slices.Equal(got, []string{"s1", "gone"}) {
			t.Fatalf("stores before the change: %v", got)
		}
	}

	if _, err := e.pool.Exec(e.ctx(), `UPDATE stores SET state = 'closed', version = version + 1 WHERE id = 's1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx(), `DELETE FROM stores WHERE id = 'gone'`); err != nil {
		t.Fatal(err)
	}
	changed := time.Now() // both changes committed before this instant

	var (
		wg       sync.WaitGroup
		seq      atomic.Int64
		refused  atomic.Int64
		deadline = changed.Add(3 * bound)
	)
	for _, svc := range svcs {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					asked := time.Now()
					late := asked.After(changed.Add(bound))
					res, err := svc.ReserveHolds(e.ctx(), order(fmt.Sprintf("o-%d", seq.Add(1)), "s1", "LATTE", 1))
					switch {
					case err != nil:
						t.Errorf("reserve: %v", err)
						return
					case res.GetOutcome() == reserved && late:
						t.Errorf("reserve asked %v after s1 closed (bound %v) was held: %v", asked.Sub(changed), bound, res)
						return
					case res.GetOutcome() == unavailable:
						refused.Add(1)
					}
					res2, err := svc.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 5000, IncludeNotAccepting: true})
					if err != nil {
						t.Errorf("find stores: %v", err)
						return
					}
					if got := storeIDs(res2.GetStores()); late && slices.Contains(got, "gone") {
						t.Errorf("locator asked %v after 'gone' was deleted (bound %v) lists it: %v", asked.Sub(changed), bound, got)
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Error("no reserve at the closed store was refused")
	}
	for _, svc := range svcs {
		_, err := svc.ReserveHolds(e.ctx(), order("at-gone", "gone", "LATTE", 1))
		requireStatus(t, err, codes.NotFound, "gone")
	}
	e.requireInvariants()
}

// pgTrace counts what a pool sends: statements sent alone (a round trip each), pipelines (one
// round trip for all their statements), the statements in them, and their SQL while recording.
type pgTrace struct {
	trips, statements atomic.Int64
	mu                sync.Mutex
	sql               []string
}

func (p *pgTrace) take() (trips, statements int64, sql []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sql, p.sql = p.sql, nil
	return p.trips.Swap(0), p.statements.Swap(0), sql
}

func (p *pgTrace) record(sql string) {
	p.statements.Add(1)
	p.mu.Lock()
	p.sql = append(p.sql, strings.Join(strings.Fields(sql), " "))
	p.mu.Unlock()
}

func (p *pgTrace) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	p.trips.Add(1)
	p.record(d.SQL)
	return ctx
}

func (p *pgTrace) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (p *pgTrace) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	p.trips.Add(1)
	return ctx
}

func (p *pgTrace) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	p.record(d.SQL)
}

func (p *pgTrace) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// tracedPool is a pool like base (same database and schema) whose traffic trace sees.
func tracedPool(t testing.TB, base *pgxpool.Pool, trace *pgTrace) *pgxpool.Pool {
	t.Helper()
	cfg := base.Config()
	cfg.ConnConfig.Tracer = trace
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// A reserve batch costs two round trips (BEGIN with the locks; the writes with COMMIT) and 11
// statements however many orders it decides (one of them locks its orders), and reads stores only by key, to check the
// cache's versions of its stores (a row comes back only when the cache is behind). A reserve
// at the nearest store adds one read of the candidates' stock.
func TestReserveRoundTripsArePinned(t *testing.T) {
	e := newEnv(t)
	for i, id := range []string{"s1", "s2", "s3"} {
		e.createStore(storeAt(id, 47.61+float64(i)*0.001, -122.33))
		for _, sku := range []string{"A", "B", "C"} {
			e.setStock(id, sku, 10_000, 0)
		}
	}
	trace := &pgTrace{}
	svc := inventory.New(inventory.Config{Pool: tracedPool(t, e.pool, trace), Logger: testenv.Logger(t), NATS: testenv.NATSConn(t, e.ns)})
	reserve := func(req *inventoryv1.ReserveHoldsRequest) {
		t.Helper()
		res, err := svc.ReserveHolds(e.ctx(), req)
		if err != nil || res.GetOutcome() != reserved {
			t.Fatalf("reserve %s: %v %v", req.GetOrderId(), res, err)
		}
	}
	near := func(id string, skuQty ...any) *inventoryv1.ReserveHoldsRequest {
		req := order(id, "", skuQty...)
		req.Near = &commonv1.LatLng{Latitude: 47.611, Longitude: -122.33}
		return req
	}
	reserve(order("warm", "s1", "A", 1)) // loads the store cache
	trace.take()

	requireCost := func(what string, wantTrips, wantStatements int64) {
		t.Helper()
		trips, statements, sql := trace.take()
		if trips != wantTrips || statements != wantStatements {
			t.Errorf("%s: %d round trips, %d statements; want %d, %d:\n%s", what, trips, statements, wantTrips, wantStatements, strings.Join(sql, "\n"))
		}
		for _, s := range sql {
			if strings.Contains(s, "FROM stores") && !strings.Contains(s, "JOIN unnest(") {
				t.Errorf("%s reads stores other than by key: %s", what, s)
			}
		}
	}
	reserve(order("named", "s2", "A", 1, "B", 2, "C", 1))
	// BEGIN, plan settings, order locks, store locks, stock rows, holds, stores; the writes and
	// COMMIT.
	requireCost("reserve at a named store", 2, 12)
	reserve(near("nearest", "A", 1, "B", 1))
	// One more round trip than a named store: the stock read that finds the store (its plan
	// settings and the read, pipelined).
	requireCost("reserve at the nearest store", 3, 14)

	// Many orders at once, a hot SKU among them: every batch, whatever its size, costs the same.
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			store := []string{"s1", "s2", "s3"}[i%3]
			res, err := svc.ReserveHolds(e.ctx(), order(fmt.Sprintf("many-%d", i), store, "A", 1, "B", 1))
			if err != nil || res.GetOutcome() != reserved {
				t.Errorf("reserve many-%d: %v %v", i, res, err)
			}
		}()
	}
	wg.Wait()
	trips, statements, sql := trace.take()
	batches := int64(0)
	for _, s := range sql {
		if s == "BEGIN" {
			batches++
		}
	}
	t.Logf("60 concurrent orders: %d transactions, %d round trips, %d statements", batches, trips, statements)
	if trips != 2*batches || statements != 12*batches {
		t.Errorf("60 orders in %d transactions took %d round trips and %d statements; want 2 and 12 per transaction", batches, trips, statements)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// Whether a store takes orders is decided from the table in the reserve's transaction, not
// from the cache alone: a copy that never hears the store events (none here, and a safety net
// of an hour) refuses its very next reserve at a store another copy paused, and corrects its
// cache on the way.
func TestReserveDecidesStoreStateFromTheTableNotAStaleCache(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 100, 0)
	deaf := inventory.New(inventory.Config{Pool: testenv.Pool(t, e.schema, inventory.Migrations()), Logger: testenv.Logger(t),
		StoreCacheMaxAge: time.Hour})
	t.Cleanup(deaf.Close)
	reserveAt := func(id string) *inventoryv1.ReserveHoldsResponse {
		t.Helper()
		res, err := deaf.ReserveHolds(e.ctx(), order(id, "s1", "LATTE", 1))
		if err != nil {
			t.Fatalf("reserve %s: %v", id, err)
		}
		return res
	}
	if res := reserveAt("o1"); res.GetOutcome() != reserved { // the cache now holds s1, open
		t.Fatalf("reserve o1 at the open store: %v", res)
	}
	if st, _, _ := inventory.CachedStore(deaf, "s1"); st != "open" {
		t.Fatalf("cached state %q, want open", st)
	}

	paused, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "staff break"})
	if err != nil {
		t.Fatal(err)
	}
	res := reserveAt("o2")
	if res.GetOutcome() != unavailable || !strings.Contains(res.GetMessage(), "paused") {
		t.Fatalf("reserve at a store paused by another copy: %v, want STORE_UNAVAILABLE (paused)", res)
	}
	if st, v, _ := inventory.CachedStore(deaf, "s1"); st != "paused" || v != paused.GetStore().GetVersion() {
		t.Fatalf("cache after the refused reserve: %s at version %d, want paused at %d", st, v, paused.GetStore().GetVersion())
	}

	// And back: reopened elsewhere, taken again at once.
	if _, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_OPEN}); err != nil {
		t.Fatal(err)
	}
	if res := reserveAt("o3"); res.GetOutcome() != reserved {
		t.Fatalf("reserve at the store reopened by another copy: %v", res)
	}
	e.requireInvariants()
}

// The store events subscription and the NATS status listener live as long as the service:
// Close (or the end of Run's ctx) stops them, so nothing of the service acts on the connection
// or the pool once their owner closes them.
func TestCloseAndRunEndStopTheStoreEvents(t *testing.T) {
	e := newEnv(t)
	for _, viaRun := range []bool{false, true} {
		nc := testenv.NATSConn(t, e.ns)
		svc := inventory.New(inventory.Config{Pool: e.pool, Logger: testenv.Logger(t), NATS: nc})
		if n := nc.NumSubscriptions(); n != 1 {
			t.Fatalf("subscriptions after New: %d, want 1", n)
		}
		if viaRun {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- svc.Run(ctx) }()
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		} else {
			svc.Close()
		}
		if n := nc.NumSubscriptions(); n != 0 {
			t.Fatalf("subscriptions after the service stopped (via Run: %v): %d, want 0", viaRun, n)
		}
		svc.Close() // again: nothing
		// It still answers, from the table.
		e.createStore(storeAt(fmt.Sprintf("c%v", viaRun), 47.61, -122.33))
		if _, err := svc.GetStore(e.ctx(), fmt.Sprintf("c%v", viaRun)); err != nil {
			t.Fatal(err)
		}
	}
}
