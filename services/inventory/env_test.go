package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is inventory as its callers see it: a real Postgres schema, a real NATS server, the
// gRPC APIs on a real listener, and as many copies of the service as a test asks for.
type env struct {
	t       *testing.T
	schema  string
	pool    *pgxpool.Pool // the first copy's pool, for checks the APIs do not offer
	ns      *server.Server
	nc      *nats.Conn // the callers' connection (fulfilment, cart)
	admin   inventoryv1.InventoryAdminServiceClient
	locator inventoryv1.StoreLocatorServiceClient
	copies  []*inventory.Service
}

type envOption func(*inventory.Config)

// withSweeper makes every copy sweep expired holds at interval (Run is started).
func withSweeper(interval time.Duration) envOption {
	return func(c *inventory.Config) { c.SweepInterval = interval }
}

// withStoreCacheMaxAge sets the store cache's safety-net bound of every copy.
func withStoreCacheMaxAge(d time.Duration) envOption {
	return func(c *inventory.Config) { c.StoreCacheMaxAge = d }
}

// newEnv starts one copy of inventory; more with addCopy.
func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, schema: testenv.UniqueSchema(t, "inv")}
	e.pool = testenv.Pool(t, e.schema, inventory.Migrations())
	e.ns = testenv.NATS(t)
	e.nc = testenv.NATSConn(t, e.ns)
	svc := e.addCopy(opts...)

	gs := grpc.NewServer()
	svc.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	e.admin = inventoryv1.NewInventoryAdminServiceClient(cc)
	e.locator = inventoryv1.NewStoreLocatorServiceClient(cc)
	return e
}

// addCopy starts another copy of the service on the same schema and NATS (its own pool and
// connection), serving the same subjects in the same queue group.
func (e *env) addCopy(opts ...envOption) *inventory.Service {
	t := e.t
	t.Helper()
	pool := e.pool
	if len(e.copies) > 0 {
		pool = testenv.Pool(t, e.schema, inventory.Migrations())
	}
	// Each copy hears the store events on its own connection, as separate processes would.
	cfg := inventory.Config{Pool: pool, Logger: testenv.Logger(t), NATS: testenv.NATSConn(t, e.ns)}
	sweep := false
	for _, o := range opts {
		o(&cfg)
		sweep = cfg.SweepInterval > 0
	}
	svc := inventory.New(cfg)
	rpc, err := natsrpc.AddService(testenv.NATSConn(t, e.ns), "inventory", "0.0.0", "inventory under test", testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rpc.Stop() })
	if err := svc.RegisterNATS(rpc); err != nil {
		t.Fatal(err)
	}
	if sweep {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = svc.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	e.copies = append(e.copies, svc)
	return svc
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// allDay is a week of round-the-clock hours: such a store always accepts orders.
func allDay() []*inventoryv1.OpeningHours {
	var out []*inventoryv1.OpeningHours
	for d := inventoryv1.Weekday_WEEKDAY_MONDAY; d <= inventoryv1.Weekday_WEEKDAY_SUNDAY; d++ {
		out = append(out, &inventoryv1.OpeningHours{Weekday: d, OpenTime: "00:00", CloseTime: "24:00"})
	}
	return out
}

// storeAt is a valid store at (lat, lng), open around the clock.
func storeAt(id string, lat, lng float64) *inventoryv1.Store {
	return &inventoryv1.Store{
		Id:           id,
		Name:         "Store " + id,
		Address:      &inventoryv1.Address{Line1: "1 Main St", City: "Seattle", Region: "WA", PostalCode: "98101", CountryCode: "US"},
		Location:     &commonv1.LatLng{Latitude: lat, Longitude: lng},
		TimeZone:     "America/Los_Angeles",
		OpeningHours: allDay(),
		PrepTime:     durationpb.New(5 * time.Minute),
		PickupWindow: durationpb.New(time.Hour),
	}
}

func (e *env) createStore(st *inventoryv1.Store) *inventoryv1.Store {
	e.t.Helper()
	res, err := e.admin.CreateStore(e.ctx(), &inventoryv1.CreateStoreRequest{Store: st})
	if err != nil {
		e.t.Fatalf("CreateStore(%s): %v", st.GetId(), err)
	}
	return res.GetStore()
}

var keySeq struct {
	sync.Mutex
	n int
}

func nextKey(prefix string) string {
	keySeq.Lock()
	defer keySeq.Unlock()
	keySeq.n++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), keySeq.n)
}

func (e *env) setStock(store, sku string, onHand, safety int32) *inventoryv1.StockLevel {
	e.t.Helper()
	res, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: onHand, SafetyStock: safety, IdempotencyKey: nextKey("set")})
	if err != nil {
		e.t.Fatalf("SetStock(%s, %s): %v", store, sku, err)
	}
	return res.GetLevel()
}

// level reads one stock level through the admin API.
func (e *env) level(store, sku string) *inventoryv1.StockLevel {
	e.t.Helper()
	res, err := e.admin.ListStock(e.ctx(), &inventoryv1.ListStockRequest{StoreId: store, Skus: []string{sku}})
	if err != nil {
		e.t.Fatalf("ListStock(%s, %s): %v", store, sku, err)
	}
	if len(res.GetLevels()) != 1 {
		return &inventoryv1.StockLevel{StoreId: store, Sku: sku}
	}
	return res.GetLevels()[0]
}

// call makes a NATS request as fulfilment or cart would.
func (e *env) call(subject string, req, res proto.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return natsrpc.Call(ctx, e.nc, subject, req, res)
}

func (e *env) reserve(req *inventoryv1.ReserveHoldsRequest) (*inventoryv1.ReserveHoldsResponse, error) {
	var res inventoryv1.ReserveHoldsResponse
	err := e.call(inventory.SubjectReserveHolds, req, &res)
	return &res, err
}

func (e *env) mustReserve(req *inventoryv1.ReserveHoldsRequest) *inventoryv1.ReserveHoldsResponse {
	e.t.Helper()
	res, err := e.reserve(req)
	if err != nil {
		e.t.Fatalf("reserve %s: %v", req.GetOrderId(), err)
	}
	return res
}

func (e *env) release(orderID, lineID string) []*inventoryv1.Hold {
	e.t.Helper()
	var res inventoryv1.ReleaseHoldsResponse
	if err := e.call(inventory.SubjectReleaseHolds, &inventoryv1.ReleaseHoldsRequest{OrderId: orderID, LineId: lineID,
		Reason: inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED}, &res); err != nil {
		e.t.Fatalf("release %s/%s: %v", orderID, lineID, err)
	}
	return res.GetReleased()
}

func (e *env) commit(orderID string) []*inventoryv1.Hold {
	e.t.Helper()
	var res inventoryv1.CommitHoldsResponse
	if err := e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: orderID}, &res); err != nil {
		e.t.Fatalf("commit %s: %v", orderID, err)
	}
	return res.GetCommitted()
}

// order builds a reserve request at store for lines given as sku, quantity pairs (line ids
// l1, l2, …), holding for ten minutes.
func order(id, store string, skuQty ...any) *inventoryv1.ReserveHoldsRequest {
	req := &inventoryv1.ReserveHoldsRequest{OrderId: id, StoreId: store, ExpireTime: timestamppb.New(time.Now().Add(10 * time.Minute))}
	for i := 0; i+1 < len(skuQty); i += 2 {
		req.Lines = append(req.Lines, &inventoryv1.HoldLine{LineId: fmt.Sprintf("l%d", i/2+1), Sku: skuQty[i].(string), Quantity: int32(skuQty[i+1].(int))})
	}
	return req
}

// requireInvariants fails t unless CheckInvariants (the operators' RPC) finds nothing wrong.
func (e *env) requireInvariants() {
	e.t.Helper()
	res, err := e.admin.CheckInvariants(e.ctx(), &inventoryv1.CheckInvariantsRequest{})
	if err != nil {
		e.t.Fatalf("CheckInvariants: %v", err)
	}
	if !res.GetOk() {
		for i, v := range res.GetViolations() {
			if i == 10 {
				break
			}
			e.t.Errorf("invariant broken at %s/%s: %s (%s)", v.GetStoreId(), v.GetSku(), v.GetRule(), v.GetDetail())
		}
		e.t.FailNow()
	}
}

// requireLedgerMatches checks the ledger independently of the service's own check: for every
// stock row, the movements in id order add up, step by step, to the levels each one reports,
// and their sums are today's levels.
func (e *env) requireLedgerMatches() {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx(), `
		WITH run AS (
			SELECT store_id, sku, id, on_hand_after, reserved_after,
				sum(on_hand_delta) OVER w AS oh, sum(reserved_delta) OVER w AS rs
			FROM movements WINDOW w AS (PARTITION BY store_id, sku ORDER BY id))
		SELECT 'step ' || id, store_id, sku, oh, on_hand_after, rs, reserved_after FROM run
			WHERE oh <> on_hand_after OR rs <> reserved_after
		UNION ALL
		SELECT 'level', s.store_id, s.sku, coalesce(sum(m.on_hand_delta), 0), s.on_hand, coalesce(sum(m.reserved_delta), 0), s.reserved
			FROM stock s LEFT JOIN movements m ON m.store_id = s.store_id AND m.sku = s.sku
			GROUP BY s.store_id, s.sku, s.on_hand, s.reserved
			HAVING coalesce(sum(m.on_hand_delta), 0) <> s.on_hand OR coalesce(sum(m.reserved_delta), 0) <> s.reserved
		LIMIT 10`)
	if err != nil {
		e.t.Fatalf("ledger check: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var what, store, sku string
		var sumOH, oh, sumRS, rs int64
		if err := rows.Scan(&what, &store, &sku, &sumOH, &oh, &sumRS, &rs); err != nil {
			e.t.Fatal(err)
		}
		e.t.Errorf("ledger of %s/%s does not add up at %s: on hand sum %d vs %d, reserved sum %d vs %d", store, sku, what, sumOH, oh, sumRS, rs)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
}

// count runs a count query on the schema.
func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// outboxEvents returns the payloads of the events recorded on subject, oldest first.
func (e *env) outboxEvents(subject string) [][]byte {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx(), `SELECT payload FROM outbox WHERE subject = $1 ORDER BY seq`, subject)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// requireStatus fails t unless err is a status with code whose message names field (and,
// for InvalidArgument, whose BadRequest details name it too).
func requireStatus(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want %v naming %q", err, code, field)
	}
	if !strings.Contains(st.Message(), field) {
		t.Fatalf("message %q does not name %q", st.Message(), field)
	}
	if code != codes.InvalidArgument {
		return
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				if fv.GetField() == field {
					return
				}
			}
		}
	}
	t.Fatalf("details of %q have no field violation for %q", st.Message(), field)
}

// retries reads how many transactions were rerun for reason (handoff_inventory_transaction_retries_total).
func retries(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "handoff_inventory_transaction_retries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func isStatus(err error, code codes.Code) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se) && se.GRPCStatus().Code() == code
}

// withLocalClock gives every copy a process clock skew off the real one (a machine whose
// clock runs fast or slow).
func withLocalClock(skew time.Duration) envOption {
	return func(c *inventory.Config) { c.LocalClock = func() time.Time { return time.Now().Add(skew) } }
}
