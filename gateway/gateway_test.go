package gateway_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// h2c speaks cleartext HTTP/2, as gRPC clients do.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// protocols are the three ways clients reach the gateway on its one port.
var protocols = []struct {
	name   string
	client func() *http.Client
	opts   []connect.ClientOption
}{
	{"gRPC", h2cClient, []connect.ClientOption{connect.WithGRPC()}},
	{"gRPC-web", func() *http.Client { return http.DefaultClient }, []connect.ClientOption{connect.WithGRPCWeb()}},
	{"Connect", func() *http.Client { return http.DefaultClient }, nil},
}

func TestCatalogIsServedOverGRPCAndGRPCWebAndConnect(t *testing.T) {
	ready := stacktest.Start(t)
	base := "http://" + ready.GatewayAddr
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := catalogv1connect.NewCatalogServiceClient(p.client(), base, p.opts...)
			res, err := c.ListProducts(t.Context(), connect.NewRequest(&catalogv1.ListProductsRequest{PageSize: 100}))
			if err != nil {
				t.Fatalf("ListProducts: %v", err)
			}
			if n := len(res.Msg.GetProducts()); n != 100 || res.Msg.GetNextPageToken() == "" {
				t.Fatalf("got %d products (next page %q); want a full page of the demo catalog", n, res.Msg.GetNextPageToken())
			}
			cats, err := c.ListCategories(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{}))
			if err != nil || len(cats.Msg.GetCategories()) == 0 {
				t.Fatalf("ListCategories = %v, %v", cats, err)
			}

			// Errors keep their code, message and details through the edge.
			_, err = c.GetProduct(t.Context(), connect.NewRequest(&catalogv1.GetProductRequest{ProductId: "prd-nope"}))
			if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "prd-nope") {
				t.Fatalf("unknown product: %v; want NotFound naming it", err)
			}
			_, err = c.BatchGetVariants(t.Context(), connect.NewRequest(&catalogv1.BatchGetVariantsRequest{Skus: []string{"LATTE-16", ""}}))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
				t.Fatalf("empty SKU: %v; want InvalidArgument", err)
			}
			if !hasFieldViolation(ce, "skus[1]") {
				t.Fatalf("InvalidArgument details %v do not name skus[1]", ce.Details())
			}
		})
	}
}

func hasFieldViolation(ce *connect.Error, field string) bool {
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			continue
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				if fv.GetField() == field {
					return true
				}
			}
		}
	}
	return false
}

func TestHealthAndReflectionAnswerStandardGRPCClients(t *testing.T) {
	ready := stacktest.Start(t)
	conn, err := grpc.NewClient(ready.GatewayAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", catalogv1connect.CatalogServiceName} {
		res, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q = %v, %v; want SERVING", svc, res, err)
		}
	}
	if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "handoff.catalog.v1.CatalogAdminService"}); err == nil {
		t.Fatal("health answered for an admin service the edge does not serve")
	}
	// An unknown name is not echoed whole: 900 KiB back would amplify the request, and overflow
	// the header limit of a proxy on the way.
	_, err = hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 900<<10)})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || len(st.Message()) > 400 {
		t.Fatalf("health of a 900 KiB unknown name: %v, a message of %d bytes; want NotFound, the name cut", st.Code(), len(st.Message()))
	}

	rc := grpcreflect.NewClient(h2cClient(), "http://"+ready.GatewayAddr, connect.WithGRPC())
	stream := rc.NewStream(t.Context())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, n := range names {
		got[string(n)] = true
	}
	if !got[catalogv1connect.CatalogServiceName] || !got["grpc.health.v1.Health"] {
		t.Fatalf("reflection lists %v; want the catalog and health", names)
	}
	if got[catalogv1connect.CatalogAdminServiceName] {
		t.Fatalf("reflection exposes the admin API at the public edge: %v", names)
	}
	// The files describing the public services share .proto files with admin and staff APIs:
	// the edge describes them without those.
	for _, svc := range gateway.PublicServices {
		files, err := stream.FileContainingSymbol(protoreflect.FullName(svc))
		if err != nil {
			t.Fatalf("reflection cannot describe %s: %v", svc, err)
		}
		for _, f := range files {
			for _, s := range f.GetService() {
				if full := f.GetPackage() + "." + s.GetName(); !slices.Contains(gateway.PublicServices, full) {
					t.Errorf("describing %s, reflection hands out %s (file %s), which the gateway does not serve", svc, full, f.GetName())
				}
			}
		}
	}
	for _, hidden := range []string{catalogv1connect.CatalogAdminServiceName, fulfilmentv1connect.StoreOrderServiceName, fulfilmentv1connect.FulfilmentAdminServiceName, "handoff.inventory.v1.InventoryAdminService"} {
		if _, err := stream.FileContainingSymbol(protoreflect.FullName(hidden)); err == nil {
			t.Errorf("reflection describes %s at the public edge", hidden)
		}
	}
	// A refusal's details are described too, so grpcurl shows the fields a BadRequest names.
	files, err := stream.FileContainingSymbol("google.rpc.BadRequest")
	if err != nil || len(files) == 0 || files[0].GetName() != "google/rpc/error_details.proto" {
		t.Fatalf("reflection of google.rpc.BadRequest at the gateway: %d files, %v; want google/rpc/error_details.proto", len(files), err)
	}
}

// A health Watch of a service the edge does not answer for says SERVICE_UNKNOWN and stays open,
// as grpc.health.v1 has it: a standard watcher whose call ended would call again in a loop.
func TestAHealthWatchOfAnUnknownServiceStaysOpen(t *testing.T) {
	g := gatewayTo(t, testenv.FreeAddr(t), time.Second)
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{Service: "handoff.nope.v1.Nope"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Fatalf("first message %v, %v; want SERVICE_UNKNOWN", first, err)
	}
	ended := make(chan error, 1)
	go func() { _, err := stream.Recv(); ended <- err }()
	select {
	case err := <-ended:
		t.Fatalf("the watch of an unknown service ended after SERVICE_UNKNOWN (%v); want it kept open", err)
	case <-time.After(time.Second):
	}
}

func TestBrowserPreflightMayReadGRPCStatus(t *testing.T) {
	ready := stacktest.Start(t, func(c *stack.Config) { c.AllowedOrigins = []string{"http://shop.example"} })
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodOptions, "http://"+ready.GatewayAddr+catalogv1connect.CatalogServiceListProductsProcedure, nil)
	req.Header.Set("Origin", "http://shop.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	// Browsers send the names lower-case and sorted (Fetch standard); an app traced with
	// OpenTelemetry's web SDK sends its trace context too, which the edge links to.
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,traceparent,tracestate,x-grpc-web,x-user-agent")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "http://shop.example" {
		t.Fatalf("preflight allowed origin %q; headers %v", got, res.Header)
	}

	// The real call from that origin exposes grpc-status to the page.
	c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+ready.GatewayAddr, connect.WithGRPCWeb(),
		connect.WithInterceptors(originInterceptor("http://shop.example")))
	var header http.Header
	res2, err := c.ListCategories(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	header = res2.Header()
	if exposed := strings.ToLower(header.Get("Access-Control-Expose-Headers")); !strings.Contains(exposed, "grpc-status") || !strings.Contains(exposed, "grpc-message") {
		t.Fatalf("Access-Control-Expose-Headers = %q; browsers could not read the gRPC status", exposed)
	}

	// Another origin gets no CORS grant.
	req.Header.Set("Origin", "http://evil.example")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Fatalf("foreign origin granted %q", got)
	}
}

func originInterceptor(origin string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Origin", origin)
			return next(ctx, req)
		}
	}
}

func TestOversizedRequestIsRefusedAndTheGatewayStaysUp(t *testing.T) {
	ready := stacktest.Start(t)
	c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+ready.GatewayAddr, connect.WithGRPCWeb())
	huge := make([]string, 0, 3000)
	for range 3000 {
		huge = append(huge, strings.Repeat("X", 512))
	}
	_, err := c.BatchGetVariants(t.Context(), connect.NewRequest(&catalogv1.BatchGetVariantsRequest{Skus: huge}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("1.5 MB request: %v; want ResourceExhausted", err)
	}
	if _, err := c.ListCategories(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{})); err != nil {
		t.Fatalf("gateway unusable after an oversized request: %v", err)
	}
}

// servedGateway is a gateway serving on addr with keys until stop; served is closed when its
// Serve has returned.
type servedGateway struct {
	addr   string
	keys   *auth.KeySet
	stop   context.CancelFunc
	served chan struct{}
}

// gatewayTo serves a gateway whose backends are all at addr, on a fresh port with a test key set.
func gatewayTo(t *testing.T, addr string, grace time.Duration, edits ...func(*gateway.Config)) *servedGateway {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	keys, err := auth.ParseKeySet("k:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{Catalog: conn, Inventory: conn, Cart: conn, Fulfilment: conn, Keys: keys, Logger: testenv.Logger(t)}
	for _, edit := range edits {
		edit(&cfg)
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &servedGateway{addr: glis.Addr().String(), keys: keys, stop: cancel, served: make(chan struct{})}
	go func() { defer close(g.served); _ = gw.Serve(ctx, glis, grace) }()
	t.Cleanup(func() { cancel(); <-g.served })
	return g
}

// An IPv6 site (/48) may hold 16 addresses' worth of open health and reflection streams, as it
// may spend 16 addresses' rate: before, streams were counted per /64 only, and one site could
// hold 16 from each of its 65,536 /64s, a million goroutines. (The addresses come from a trusted
// proxy's X-Forwarded-For.)
func TestAnIPv6SiteHoldsSixteenAddressesWorthOfOpenStreams(t *testing.T) {
	g := gatewayTo(t, testenv.FreeAddr(t), time.Second, func(c *gateway.Config) {
		c.TrustedProxies = []net.IPNet{{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(32, 32)}}
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const perAddr, addrs = 16, 20
	open, refused := 0, 0
	for a := range addrs {
		watch := connect.NewClient[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse](h2cClient(),
			"http://"+g.addr+"/grpc.health.v1.Health/Watch", connect.WithGRPC())
		for range perAddr {
			req := connect.NewRequest(&healthpb.HealthCheckRequest{})
			req.Header().Set("X-Forwarded-For", fmt.Sprintf("2001:db8:1:%x::1", a+1)) // a /64 of 2001:db8:1::/48
			s, err := watch.CallServerStream(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case s.Receive():
				open++
			case connect.CodeOf(s.Err()) == connect.CodeResourceExhausted:
				refused++
			default:
				t.Fatalf("stream: %v", s.Err())
			}
		}
	}
	if open != 16*perAddr || refused != (addrs-16)*perAddr {
		t.Fatalf("one /48 opened %d health streams at once, %d refused; want %d open (16 addresses' worth), the rest refused", open, refused, 16*perAddr)
	}
}

func TestBackendDownIsUnavailableNotAHang(t *testing.T) {
	g := gatewayTo(t, testenv.FreeAddr(t), time.Second)

	c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+g.addr, connect.WithGRPCWeb())
	callCtx, callCancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer callCancel()
	_, err := c.ListCategories(callCtx, connect.NewRequest(&catalogv1.ListCategoriesRequest{}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("catalog down: %v; want Unavailable", err)
	}
}

// A token in an Authorization header with characters no bearer token has (a tab after the
// scheme, a letter outside ASCII after it) is refused as Unauthenticated; before, it was verified,
// forwarded as it came, refused by gRPC on the way to the service, and the caller got Internal.
// The same token with plain spaces goes through to the service.
func TestATokenWithCharactersNoTokenHasIsUnauthenticatedNotInternal(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := grpc.NewServer()
	fulfilmentv1.RegisterOrderServiceServer(backend, fulfilmentv1.UnimplementedOrderServiceServer{})
	go func() { _ = backend.Serve(lis) }()
	t.Cleanup(backend.Stop)
	g := gatewayTo(t, lis.Addr().String(), time.Second)
	tok := tokens(t, g.keys)["customer"]
	orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, "http://"+g.addr, connect.WithGRPCWeb())
	for _, tc := range []struct {
		header string
		want   connect.Code
	}{
		{"Bearer " + tok, connect.CodeUnimplemented}, // the stub service's answer: forwarded
		{"Bearer   " + tok + " ", connect.CodeUnimplemented},
		{"Bearer \t" + tok, connect.CodeUnauthenticated},
		{"Bearer " + tok + "é", connect.CodeUnauthenticated},
	} {
		req := connect.NewRequest(&fulfilmentv1.ListOrdersRequest{})
		req.Header().Set("Authorization", tc.header)
		if _, err := orders.ListOrders(t.Context(), req); connect.CodeOf(err) != tc.want {
			t.Errorf("Authorization %q…: %v; want %v", tc.header[:9], err, tc.want)
		}
	}
}

// tokens mints the callers a shopper RPC must tell apart.
func tokens(t *testing.T, keys *auth.KeySet) map[string]string {
	t.Helper()
	mint := func(ks *auth.KeySet, p auth.Principal, ttl time.Duration) string {
		tok, err := ks.Issue(p, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	otherKeys, err := auth.ParseKeySet("dev:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("z", 32))))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"customer":  mint(keys, auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour),
		"expired":   mint(keys, auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, -time.Hour),
		"other key": mint(otherKeys, auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour),
		"staff":     mint(keys, auth.Principal{Subject: "till-1", Role: auth.RoleStaff, Stores: []string{"sea-capitol-hill-01"}}, time.Hour),
		"admin":     mint(keys, auth.Principal{Subject: "ops", Role: auth.RoleAdmin}, time.Hour),
	}
}

func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}
}

// Every shopper RPC that needs a customer refuses, at the edge, callers that are not one.
func TestShopperRPCsRefuseCallersWithoutACustomerToken(t *testing.T) {
	ready := stacktest.Start(t)
	toks := tokens(t, ready.Keys)
	base := "http://" + ready.GatewayAddr
	want := map[string]connect.Code{
		"none": connect.CodeUnauthenticated, "expired": connect.CodeUnauthenticated, "other key": connect.CodeUnauthenticated,
		"staff": connect.CodePermissionDenied, "admin": connect.CodePermissionDenied,
	}
	for who, code := range want {
		tok := toks[who]
		opts := []connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(bearer(tok))}
		cart := cartv1connect.NewCartServiceClient(http.DefaultClient, base, opts...)
		orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, base, opts...)
		calls := map[string]func() error{
			"CreateCart": func() error {
				_, err := cart.CreateCart(t.Context(), connect.NewRequest(&cartv1.CreateCartRequest{}))
				return err
			},
			"Checkout": func() error {
				_, err := cart.Checkout(t.Context(), connect.NewRequest(&cartv1.CheckoutRequest{CartId: "c", IdempotencyKey: "k-123456789"}))
				return err
			},
			"ListOrders": func() error {
				_, err := orders.ListOrders(t.Context(), connect.NewRequest(&fulfilmentv1.ListOrdersRequest{}))
				return err
			},
			"CancelOrder": func() error {
				_, err := orders.CancelOrder(t.Context(), connect.NewRequest(&fulfilmentv1.CancelOrderRequest{OrderId: "o"}))
				return err
			},
			"WatchOrder": func() error {
				req := connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: "o"})
				if tok != "" {
					req.Header().Set("Authorization", "Bearer "+tok)
				}
				stream, err := orders.WatchOrder(t.Context(), req)
				if err != nil {
					return err
				}
				defer stream.Close()
				for stream.Receive() {
				}
				return stream.Err()
			},
		}
		for name, call := range calls {
			if got := connect.CodeOf(call()); got != code {
				t.Errorf("%s with %s token: %v, want %v", name, who, got, code)
			}
		}
	}
	// A bad token is refused even where anonymous callers are welcome: the caller learns it.
	c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, base, connect.WithInterceptors(bearer(toks["other key"])))
	if _, err := c.ListCategories(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("catalog with a forged token: %v; want Unauthenticated", err)
	}
}

func TestRateLimitsTripWithRetryInfoAndRecover(t *testing.T) {
	ready := stacktest.Start(t, func(c *stack.Config) {
		c.RateLimits = gateway.RateLimits{PerCaller: 5, PerCallerBurst: 3, PerAddress: 5, PerAddressBurst: 3, Checkout: 1, CheckoutBurst: 1}
	})
	toks := tokens(t, ready.Keys)
	for _, who := range []string{"anonymous", "customer", "other key"} {
		c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+ready.GatewayAddr, connect.WithInterceptors(bearer(toks[who])))
		call := func() error {
			_, err := c.ListCategories(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{}))
			return err
		}
		var limited error
		for range 10 {
			// A token signed with another key is refused each time (Unauthenticated) until its
			// address is limited.
			if err := call(); err != nil && (who != "other key" || connect.CodeOf(err) == connect.CodeResourceExhausted) {
				limited = err
				break
			}
		}
		var ce *connect.Error
		if !errors.As(limited, &ce) || ce.Code() != connect.CodeResourceExhausted {
			t.Fatalf("%s: 10 quick calls over a burst of 3 were never limited: %v", who, limited)
		}
		var retry time.Duration
		for _, d := range ce.Details() {
			if v, err := d.Value(); err == nil {
				if ri, ok := v.(*errdetails.RetryInfo); ok {
					retry = ri.GetRetryDelay().AsDuration()
				}
			}
		}
		if retry <= 0 || retry > time.Second {
			t.Fatalf("%s: RetryInfo delay %v; want a short positive delay", who, retry)
		}
		time.Sleep(retry + 50*time.Millisecond) // the bucket refills at its rate: waiting is the behaviour under test
		if err := call(); connect.CodeOf(err) == connect.CodeResourceExhausted || err != nil && who != "other key" {
			t.Fatalf("%s: still limited after waiting the advised %v: %v", who, retry, err)
		}
	}
}

// Through the edge, a shopper's cart and order are invisible to every other caller, and a
// refused call changes nothing.
func TestAnotherCallersTokenNeverReachesAShoppersCartOrOrder(t *testing.T) {
	ready := stacktest.Start(t)
	toks := tokens(t, ready.Keys)
	base := "http://" + ready.GatewayAddr
	bob, err := ready.Keys.Issue(auth.Principal{Subject: "bob", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	toks["another customer"] = bob
	as := func(tok string) (cartv1connect.CartServiceClient, fulfilmentv1connect.OrderServiceClient) {
		opts := []connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(bearer(tok))}
		return cartv1connect.NewCartServiceClient(http.DefaultClient, base, opts...), fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, base, opts...)
	}

	// Alice's cart, one line, and an order from a second cart.
	aliceCart, aliceOrders := as(toks["customer"])
	created, err := aliceCart.CreateCart(t.Context(), connect.NewRequest(&cartv1.CreateCartRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	cartID := created.Msg.GetCart().GetId()
	added, err := aliceCart.AddLine(t.Context(), connect.NewRequest(&cartv1.AddLineRequest{CartId: cartID, Sku: "CROISSANT", Quantity: 1}))
	if err != nil {
		t.Fatal(err)
	}
	version := added.Msg.GetCart().GetVersion()
	orders, err := aliceOrders.ListOrders(t.Context(), connect.NewRequest(&fulfilmentv1.ListOrdersRequest{}))
	if err != nil {
		t.Fatalf("alice lists her orders: %v", err)
	}
	if len(orders.Msg.GetOrders()) != 0 {
		t.Fatalf("a new customer has orders: %v", orders.Msg.GetOrders())
	}

	want := map[string]connect.Code{
		"another customer": connect.CodeNotFound, "staff": connect.CodePermissionDenied, "admin": connect.CodePermissionDenied,
		"expired": connect.CodeUnauthenticated, "other key": connect.CodeUnauthenticated, "none": connect.CodeUnauthenticated,
	}
	for who, code := range want {
		c, _ := as(toks[who])
		_, err := c.GetCart(t.Context(), connect.NewRequest(&cartv1.GetCartRequest{CartId: cartID}))
		if got := connect.CodeOf(err); got != code {
			t.Errorf("GetCart of alice's cart with %s token: %v, want %v", who, got, code)
		}
		_, err = c.AddLine(t.Context(), connect.NewRequest(&cartv1.AddLineRequest{CartId: cartID, Sku: "CROISSANT", Quantity: 5}))
		if got := connect.CodeOf(err); got != code {
			t.Errorf("AddLine to alice's cart with %s token: %v, want %v", who, got, code)
		}
		_, err = c.ClearCart(t.Context(), connect.NewRequest(&cartv1.ClearCartRequest{CartId: cartID}))
		if got := connect.CodeOf(err); got != code {
			t.Errorf("ClearCart of alice's cart with %s token: %v, want %v", who, got, code)
		}
	}
	got, err := aliceCart.GetCart(t.Context(), connect.NewRequest(&cartv1.GetCartRequest{CartId: cartID}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.GetCart().GetVersion() != version || len(got.Msg.GetCart().GetLines()) != 1 || got.Msg.GetCart().GetLines()[0].GetQuantity() != 1 {
		t.Fatalf("refused calls changed alice's cart: %v", got.Msg.GetCart())
	}
}

// A customer's streams are capped (each holds a goroutine at the gateway and a watch behind it)
// and end, as Unauthenticated, when the token that opened them expires.
func TestWatchStreamsAreCappedPerCustomerAndEndWhenTheTokenExpires(t *testing.T) {
	ready := stacktest.Start(t)
	base := "http://" + ready.GatewayAddr
	mint := func(ttl time.Duration) string {
		tok, err := ready.Keys.Issue(auth.Principal{Subject: "carol", Role: auth.RoleCustomer}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	long := mint(time.Hour)
	opts := []connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(bearer(long))}
	cart := cartv1connect.NewCartServiceClient(http.DefaultClient, base, opts...)
	orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, base, opts...)
	created, err := cart.CreateCart(t.Context(), connect.NewRequest(&cartv1.CreateCartRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	cartID := created.Msg.GetCart().GetId()
	if _, err := cart.AddLine(t.Context(), connect.NewRequest(&cartv1.AddLineRequest{CartId: cartID, Sku: "CROISSANT", Quantity: 1})); err != nil {
		t.Fatal(err)
	}
	if _, err := cart.SetPickup(t.Context(), connect.NewRequest(&cartv1.SetPickupRequest{CartId: cartID, Pickup: &cartv1.Pickup{
		Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 25000}},
	}})); err != nil {
		t.Fatal(err)
	}
	placed, err := cart.Checkout(t.Context(), connect.NewRequest(&cartv1.CheckoutRequest{CartId: cartID, IdempotencyKey: "watch-cap-1"}))
	if err != nil {
		t.Fatal(err)
	}
	orderID := placed.Msg.GetOrder().GetId()

	watch := func(ctx context.Context, tok string) *connect.ServerStreamForClient[fulfilmentv1.WatchOrderResponse] {
		t.Helper()
		req := connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: orderID})
		req.Header().Set("Authorization", "Bearer "+tok)
		stream, err := orders.WatchOrder(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return stream
	}
	ctx, cancel := context.WithCancel(t.Context())
	var open []*connect.ServerStreamForClient[fulfilmentv1.WatchOrderResponse]
	for i := range gateway.DefaultRateLimits().OpenStreams {
		s := watch(ctx, long)
		if !s.Receive() {
			t.Fatalf("stream %d: %v", i+1, s.Err())
		}
		open = append(open, s)
	}
	extra := watch(ctx, long)
	if extra.Receive() || connect.CodeOf(extra.Err()) != connect.CodeResourceExhausted {
		t.Fatalf("a stream beyond %d open ones: %v; want ResourceExhausted", len(open), extra.Err())
	}
	// Like every other limit's refusal, it tells the client when to try again.
	var refused *connect.Error
	retry := time.Duration(0)
	if errors.As(extra.Err(), &refused) {
		for _, d := range refused.Details() {
			if v, err := d.Value(); err == nil {
				if ri, ok := v.(*errdetails.RetryInfo); ok {
					retry = ri.GetRetryDelay().AsDuration()
				}
			}
		}
	}
	if retry <= 0 {
		t.Fatalf("a stream beyond %d open ones: %v; want RetryInfo with a positive delay", len(open), extra.Err())
	}
	cancel()
	for _, s := range open {
		_ = s.Close()
	}

	// The cap counts open streams, not openings: once they are closed, more may open.
	short := mint(3 * time.Second)
	var s *connect.ServerStreamForClient[fulfilmentv1.WatchOrderResponse]
	for deadline := time.Now().Add(10 * time.Second); ; {
		s = watch(t.Context(), short)
		if s.Receive() {
			break
		}
		if connect.CodeOf(s.Err()) != connect.CodeResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("watch after closing the others: %v", s.Err())
		}
		time.Sleep(50 * time.Millisecond) // the closed streams' ends reach the gateway
	}
	ended := make(chan error, 1)
	go func() {
		for s.Receive() {
		}
		ended <- s.Err()
	}()
	select {
	case err := <-ended:
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("the stream of an expired token ended with %v; want Unauthenticated", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream outlived its token by 17 s")
	}
}

// orderBackend serves svc as the order service on a port of its own, as fulfilment in another
// process does, until t ends, and gives its address.
func orderBackend(t *testing.T, svc fulfilmentv1.OrderServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := grpc.NewServer()
	fulfilmentv1.RegisterOrderServiceServer(backend, svc)
	go func() { _ = backend.Serve(lis) }()
	t.Cleanup(backend.Stop)
	return lis.Addr().String()
}

// watchForever is an order service whose WatchOrder sends the order once and then waits for
// its caller to go.
type watchForever struct {
	fulfilmentv1.UnimplementedOrderServiceServer
}

func (watchForever) WatchOrder(req *fulfilmentv1.WatchOrderRequest, stream grpc.ServerStreamingServer[fulfilmentv1.WatchOrderResponse]) error {
	if err := stream.Send(&fulfilmentv1.WatchOrderResponse{Order: &fulfilmentv1.Order{Id: req.GetOrderId()}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// On shutdown the gateway ends its open streams as Unavailable (the client watches again)
// instead of holding its drain until the grace runs out.
func TestShutdownEndsOpenStreamsAsUnavailable(t *testing.T) {
	const grace = 20 * time.Second
	g := gatewayTo(t, orderBackend(t, watchForever{}), grace)

	tok, err := g.keys.Issue(auth.Principal{Subject: "dana", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, "http://"+g.addr, connect.WithGRPCWeb())
	req := connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
	req.Header().Set("Authorization", "Bearer "+tok)
	stream, err := orders.WatchOrder(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("first message: %v", stream.Err())
	}
	began := time.Now()
	g.stop()
	ended := make(chan error, 1)
	go func() {
		for stream.Receive() {
		}
		ended <- stream.Err()
	}()
	select {
	case err := <-ended:
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("the stream ended on shutdown with %v; want Unavailable", err)
		}
	case <-time.After(grace / 2):
		t.Fatalf("the stream was still open %v into the shutdown", grace/2)
	}
	<-g.served
	if took := time.Since(began); took > grace/2 {
		t.Fatalf("shutdown took %v with a stream open; want it ended, not waited for", took)
	}
}

// A string that is not UTF-8 is refused naming the field, in each protocol, before the call
// goes on to a backend (here there is none).
func TestInvalidUTF8IsRefusedNamingTheField(t *testing.T) {
	g := gatewayTo(t, testenv.FreeAddr(t), time.Second)
	bad := []byte{0x0a, 0x03, 0xff, 0xfe, 0x41} // product_id: 3 bytes, not UTF-8
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := catalogv1connect.NewCatalogServiceClient(p.client(), "http://"+g.addr, append(slices.Clip(p.opts), testenv.SendBytes(bad))...)
			_, err := c.GetProduct(t.Context(), connect.NewRequest(&catalogv1.GetProductRequest{}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "product_id: not valid UTF-8") {
				t.Fatalf("GetProduct with a product_id that is not UTF-8: %v; want InvalidArgument naming product_id", err)
			}
		})
	}
	// Health, open to anyone, decodes the same way.
	health := connect.NewClient[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse](http.DefaultClient,
		"http://"+g.addr+"/grpc.health.v1.Health/Check", connect.WithGRPCWeb(), testenv.SendBytes(bad))
	if _, err := health.CallUnary(t.Context(), connect.NewRequest(&healthpb.HealthCheckRequest{})); connect.CodeOf(err) != connect.CodeInvalidArgument ||
		!strings.Contains(err.Error(), "service: not valid UTF-8") {
		t.Fatalf("health Check with a service that is not UTF-8: %v; want InvalidArgument naming service", err)
	}
}

// A WatchOrder stream whose token expires ends as Unauthenticated ("open the stream again with
// a fresh one") with the order service in another process too (every deployment but the
// one-process mode). An expiry set as a deadline travelled to the service as grpc-timeout, and
// when the service's copy fired first the stream ended cleanly (the app took the watch for
// over) or as DeadlineExceeded (the app retried with its dead token).
func TestAWatchWhoseTokenExpiresEndsUnauthenticatedWithARemoteService(t *testing.T) {
	g := gatewayTo(t, orderBackend(t, watchUntilGone{}), time.Second)

	var (
		mu    sync.Mutex
		wrong []string
		total int
		wg    sync.WaitGroup
	)
	for round := range 3 {
		for _, p := range protocols {
			for i := range 5 {
				wg.Go(func() {
					tok, err := g.keys.Issue(auth.Principal{Subject: fmt.Sprintf("%s-%d-%d", p.name, round, i), Role: auth.RoleCustomer}, 2*time.Second)
					if err != nil {
						t.Error(err)
						return
					}
					orders := fulfilmentv1connect.NewOrderServiceClient(p.client(), "http://"+g.addr, p.opts...)
					req := connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
					req.Header().Set("Authorization", "Bearer "+tok)
					stream, err := orders.WatchOrder(t.Context(), req)
					if err != nil {
						t.Error(err)
						return
					}
					for stream.Receive() {
					}
					mu.Lock()
					defer mu.Unlock()
					total++
					if connect.CodeOf(stream.Err()) != connect.CodeUnauthenticated {
						wrong = append(wrong, fmt.Sprintf("%s: %v (%v)", p.name, connect.CodeOf(stream.Err()), stream.Err()))
					}
				})
			}
		}
		wg.Wait()
	}
	if len(wrong) > 0 {
		t.Fatalf("%d of %d streams whose token expired did not end as Unauthenticated:\n%v", len(wrong), total, wrong)
	}
}

// watchUntilGone is an order service whose WatchOrder, as fulfilment's does
// (services/fulfilment/watch.go), sends the order and then ends without an error once its
// caller's context ends.
type watchUntilGone struct {
	fulfilmentv1.UnimplementedOrderServiceServer
}

func (watchUntilGone) WatchOrder(req *fulfilmentv1.WatchOrderRequest, stream grpc.ServerStreamingServer[fulfilmentv1.WatchOrderResponse]) error {
	if err := stream.Send(&fulfilmentv1.WatchOrderResponse{Order: &fulfilmentv1.Order{Id: req.GetOrderId()}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}
