package posadapter_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/orderkey"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is the pos-adapter as terminals, admins and fulfilment see it: a real Postgres schema,
// a real NATS server with Handoff's streams, the adapter's Run and Serve on a loopback port
// (stopped and restarted at will), and fulfilment's order events published into JetStream
// the way fulfilment's outbox relay publishes them.
type env struct {
	t    testing.TB
	ns   *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	pool *pgxpool.Pool // the adapter's schema, for checks the APIs do not offer
	keys *auth.KeySet
	// keySpec is keys as configuration text, for adapter processes.
	keySpec string
	cfg     posadapter.Config
	addr    string
	base    string
	// grace is the adapter's shutdown grace; near zero cuts every connection at once.
	grace time.Duration

	h2c, http1 *http.Client

	mu      sync.Mutex
	adapter *posadapter.Adapter
	stop    func()
}

type envOption func(*env)

// withConfig edits the adapter's configuration.
func withConfig(f func(*posadapter.Config)) envOption { return func(e *env) { f(&e.cfg) } }

// deadConn is a gRPC connection to an address nobody listens on: a call that reaches it fails
// Unavailable, so a test refused with another code proves the adapter never forwarded it.
func deadConn(t testing.TB) *grpc.ClientConn {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// anyStore is inventory for tests that run none: its locator knows every store id the adapter
// asks about, as an open store, and any other call reaches a dead connection (Unavailable).
// Tests of what inventory answers run the real one (withServices).
type anyStore struct{ grpc.ClientConnInterface }

func (d anyStore) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if method != inventoryv1.StoreLocatorService_GetStore_FullMethodName {
		return d.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	}
	id := args.(*inventoryv1.GetStoreRequest).GetStoreId()
	reply.(*inventoryv1.GetStoreResponse).Store = &inventoryv1.Store{Id: id, Name: "Store " + id, State: inventoryv1.StoreState_STORE_STATE_OPEN}
	return nil
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, grace: 3 * time.Second}
	e.ns = testenv.NATS(t)
	e.nc = testenv.NATSConn(t, e.ns)
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	if err := streams.Ensure(context.Background(), js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	e.pool = testenv.Pool(t, "", posadapter.Migrations(), posadapter.PoolOptions()...)
	var key [32]byte
	_, _ = rand.Read(key[:])
	e.keySpec = "test:" + base64.StdEncoding.EncodeToString(key[:])
	e.keys, err = auth.ParseKeySet(e.keySpec)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = posadapter.Config{
		Pool:               e.pool,
		NC:                 testenv.NATSConn(t, e.ns),
		Keys:               e.keys,
		Fulfilment:         deadConn(t),
		Inventory:          anyStore{deadConn(t)},
		Logger:             testenv.Logger(t),
		CatchUpInterval:    200 * time.Millisecond,
		EscalationInterval: 100 * time.Millisecond,
		CallTimeout:        5 * time.Second,
		// The vendor endpoints tests start listen on loopback, which webhooks reach only when allowed.
		WebhookAllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}
	e.cfg.JS, err = jetstream.New(e.cfg.NC, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(e)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Protocols: &p}
	h1 := &http.Transport{MaxIdleConnsPerHost: 100}
	e.h2c, e.http1 = &http.Client{Transport: h2}, &http.Client{Transport: h1}
	t.Cleanup(func() { h2.CloseIdleConnections(); h1.CloseIdleConnections() })
	e.start()
	t.Cleanup(e.stopAdapter)
	return e
}

// start runs a fresh adapter (Run and Serve) on the env's address (a free port the first time,
// the same one after a restart).
func (e *env) start() {
	e.t.Helper()
	a, err := posadapter.New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	addr := e.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	for i := 0; ; i++ {
		lis, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond) // the previous adapter's port is being released
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.addr, e.base = lis.Addr().String(), "http://"+lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := a.Run(ctx); err != nil {
			e.t.Errorf("adapter Run: %v", err)
		}
	})
	wg.Go(func() {
		if err := a.Serve(ctx, lis, e.grace); err != nil {
			e.t.Errorf("adapter Serve: %v", err)
		}
	})
	e.mu.Lock()
	e.adapter, e.stop = a, func() { cancel(); wg.Wait() }
	e.mu.Unlock()
}

func (e *env) stopAdapter() {
	e.mu.Lock()
	stop := e.stop
	e.stop = nil
	e.mu.Unlock()
	if stop != nil {
		// Clients let go of idle connections first; an HTTP/2 connection otherwise keeps the
		// graceful shutdown waiting for its GOAWAY timeout.
		e.h2c.CloseIdleConnections()
		e.http1.CloseIdleConnections()
		stop()
	}
}

// restart stops the adapter and starts a new one on the same port.
func (e *env) restart() {
	e.stopAdapter()
	e.start()
}

// protocol is how a terminal talks to the adapter.
type protocol struct {
	name string
	opts []connect.ClientOption
	h2   bool
}

var (
	overGRPC    = protocol{"gRPC", []connect.ClientOption{connect.WithGRPC()}, true}
	overGRPCWeb = protocol{"gRPC-web", []connect.ClientOption{connect.WithGRPCWeb()}, false}
	protocols   = []protocol{overGRPC, overGRPCWeb}
)

// bearer sets the Authorization header on every call, unary and streaming.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (e *env) httpClient(p protocol) *http.Client {
	if p.h2 {
		return e.h2c
	}
	return e.http1
}

// terminal is a TerminalService client presenting token (a terminal credential or a JWT).
func (e *env) terminal(p protocol, token string) posv1connect.TerminalServiceClient {
	opts := append([]connect.ClientOption{connect.WithInterceptors(bearer(token))}, p.opts...)
	return posv1connect.NewTerminalServiceClient(e.httpClient(p), e.base, opts...)
}

// token mints a JWT.
func (e *env) token(p auth.Principal) string {
	e.t.Helper()
	tok, err := e.keys.Issue(p, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// admin is a TerminalAdminService client with an admin token.
func (e *env) admin() posv1connect.TerminalAdminServiceClient {
	return posv1connect.NewTerminalAdminServiceClient(e.h2c, e.base, connect.WithGRPC(),
		connect.WithInterceptors(bearer(e.token(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}))))
}

// register registers a terminal for stores and returns its id and credential.
func (e *env) register(name string, stores ...string) (string, string) {
	e.t.Helper()
	res, err := e.admin().RegisterTerminal(context.Background(), connect.NewRequest(&posv1.RegisterTerminalRequest{Name: name, StoreIds: stores}))
	if err != nil {
		e.t.Fatalf("RegisterTerminal: %v", err)
	}
	return res.Msg.GetTerminal().GetId(), res.Msg.GetCredential()
}

// order is a confirmed order of store as fulfilment publishes it (no pickup code).
func order(store string, n int) *fulfilmentv1.Order {
	now := time.Now()
	return &fulfilmentv1.Order{
		Id:           fmt.Sprintf("ord-%s-%04d-%d", store, n, now.UnixNano()),
		CustomerId:   "cust-1",
		StoreId:      store,
		StoreName:    "Store " + store,
		State:        fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED,
		PickupName:   fmt.Sprintf("Shopper %d", n),
		CustomerNote: "extra hot",
		ReadyByTime:  timestamppb.New(now.Add(10 * time.Minute)),
		Lines: []*fulfilmentv1.OrderLine{{
			LineId: "l1", Sku: "LATTE-16", ProductName: "Latte", VariantName: "16 oz", Quantity: 2,
			UnitPrice: &commonv1.Money{AmountMinor: 450, CurrencyCode: "USD"},
			State:     fulfilmentv1.OrderLineState_ORDER_LINE_STATE_ACTIVE,
		}},
		Version:    orderkey.ConfirmSeq, // placed PENDING (1), then confirmed
		CreateTime: timestamppb.New(now),
		UpdateTime: timestamppb.New(now),
	}
}

// publish puts an OrderChanged event on handoff.fulfilment.order.<event> exactly as
// fulfilment's outbox relay does (Nats-Msg-Id = event id, event type header), and returns the
// event id. The order's version makes the event id, as fulfilment's history sequence does
// (orderkey.EventID), so a confirmed order's NEW_ORDER ticket has the id a later event of the
// order still CONFIRMED would raise it by.
func (e *env) publish(event string, o *fulfilmentv1.Order, tr *fulfilmentv1.Transition) string {
	e.t.Helper()
	if tr == nil {
		tr = &fulfilmentv1.Transition{ToState: o.GetState(), Time: timestamppb.Now()}
	}
	id := orderkey.EventID(o.GetId(), o.GetVersion())
	e.publishWithID(id, event, o, tr)
	return id
}

func (e *env) publishWithID(id, event string, o *fulfilmentv1.Order, tr *fulfilmentv1.Transition) {
	e.t.Helper()
	e.publishAt(time.Now(), id, event, o, tr)
}

// publishAt publishes an event that happened at occurred.
func (e *env) publishAt(occurred time.Time, id, event string, o *fulfilmentv1.Order, tr *fulfilmentv1.Transition) {
	e.t.Helper()
	data, err := proto.Marshal(&fulfilmentv1.OrderChanged{Order: o, Transition: tr})
	if err != nil {
		e.t.Fatal(err)
	}
	msg := nats.NewMsg(streams.EventSubject("fulfilment", "order", event))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set(outbox.EventTypeHeader, "handoff.fulfilment.v1.OrderChanged")
	msg.Header.Set(outbox.OccurredAtHeader, occurred.UTC().Format(time.RFC3339Nano))
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		e.t.Fatalf("publish %s: %v", msg.Subject, err)
	}
}

// then returns a copy of o moved to state, one version on.
func then(o *fulfilmentv1.Order, state fulfilmentv1.OrderState) *fulfilmentv1.Order {
	n := proto.Clone(o).(*fulfilmentv1.Order)
	n.State = state
	n.Version++
	return n
}

// feed is one open StreamTickets call, read in the background.
type feed struct {
	t       testing.TB
	tickets chan *posv1.Ticket
	done    chan error
	cancel  context.CancelFunc
}

func (e *env) openFeed(c posv1connect.TerminalServiceClient, store string) *feed {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &feed{t: e.t, tickets: make(chan *posv1.Ticket, 10000), done: make(chan error, 1), cancel: cancel}
	e.t.Cleanup(cancel)
	stream, err := c.StreamTickets(ctx, connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
	if err != nil {
		f.done <- err
		return f
	}
	go func() {
		defer stream.Close()
		for stream.Receive() {
			f.tickets <- stream.Msg().GetTicket()
		}
		f.done <- stream.Err()
	}()
	return f
}

// take receives n tickets, failing if they do not all come within timeout.
func (f *feed) take(n int, timeout time.Duration) []*posv1.Ticket {
	f.t.Helper()
	var got []*posv1.Ticket
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case t := <-f.tickets:
			got = append(got, t)
		case err := <-f.done:
			f.t.Fatalf("stream ended after %d of %d tickets: %v", len(got), n, err)
		case <-deadline:
			f.t.Fatalf("got %d of %d tickets within %s", len(got), n, timeout)
		}
	}
	return got
}

// quiet fails if a ticket arrives within d.
func (f *feed) quiet(d time.Duration) {
	f.t.Helper()
	select {
	case t := <-f.tickets:
		f.t.Fatalf("unexpected ticket %s (%v, order %s)", t.GetTicketId(), t.GetKind(), t.GetOrderId())
	case <-time.After(d):
	}
}

// end waits for the stream to end and returns its error.
func (f *feed) end(timeout time.Duration) error {
	f.t.Helper()
	select {
	case err := <-f.done:
		return err
	case <-time.After(timeout):
		f.t.Fatalf("stream still open after %s", timeout)
		return nil
	}
}

func (f *feed) close() { f.cancel() }

// codeOf is the Connect code of err, or OK.
func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return connect.CodeUnknown
}
