package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

// edgeCounts reads handoff_edge_requests_total{edge="gateway"} of procedure, by code.
func edgeCounts(t *testing.T, procedure string) map[string]float64 {
	t.Helper()
	return testenv.CounterSums(t, "handoff_edge_requests_total", map[string]string{"edge": "gateway", "procedure": procedure}, "code")
}

// wantCountedOnce checks that procedure's answers grew by one, under code, since before.
func wantCountedOnce(t *testing.T, procedure, code string, before map[string]float64) {
	t.Helper()
	after := edgeCounts(t, procedure)
	var grew float64
	for c, v := range after {
		grew += v - before[c]
	}
	if after[code]-before[code] != 1 || grew != 1 {
		t.Errorf("%s: counted %v, before %v; want one more under code %q and nothing else", procedure, after, before, code)
	}
}

// An on-call operator sees at the gateway what shoppers get: answers, refusals for no token or
// over a rate limit (which no service behind it ever sees), a request too large, and calls
// failing Unavailable because the service behind is down, each counted once under its code;
// and the series an alert on failures reads are there at 0 before any failure.
func TestTheGatewayCountsEveryAnswerOnceByProcedureAndCode(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			// Its backends down: anonymous calls get Unavailable; a burst of 3 calls per address.
			down := gatewayTo(t, testenv.FreeAddr(t), time.Second, func(c *gateway.Config) {
				c.RateLimits = gateway.RateLimits{PerCaller: 1, PerCallerBurst: 1, PerAddress: 0.001, PerAddressBurst: 3, Checkout: 1, CheckoutBurst: 1}
				c.MaxRequestBytes = 1024
			})
			got := edgeCounts(t, catalogv1connect.CatalogServiceGetProductProcedure)
			if _, ok := got["unavailable"]; !ok {
				t.Fatalf("GetProduct's series before any call: %v; want unavailable and internal there, at 0 or more", got)
			}
			if _, ok := got["internal"]; !ok {
				t.Fatalf("GetProduct's series before any call: %v; want unavailable and internal there, at 0 or more", got)
			}
			catalog := catalogv1connect.NewCatalogServiceClient(p.client(), "http://"+down.addr, p.opts...)
			cart := cartv1connect.NewCartServiceClient(p.client(), "http://"+down.addr, p.opts...)

			before := edgeCounts(t, catalogv1connect.CatalogServiceListCategoriesProcedure)
			_, err := catalog.ListCategories(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{}))
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("ListCategories with catalog down: %v; want Unavailable", err)
			}
			wantCountedOnce(t, catalogv1connect.CatalogServiceListCategoriesProcedure, "unavailable", before)

			before = edgeCounts(t, catalogv1connect.CatalogServiceListProductsProcedure)
			_, err = catalog.ListProducts(t.Context(), connect.NewRequest(&catalogv1.ListProductsRequest{PageToken: strings.Repeat("x", 4096)}))
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Fatalf("ListProducts of 4 KB over a 1 KB limit: %v; want ResourceExhausted", err)
			}
			wantCountedOnce(t, catalogv1connect.CatalogServiceListProductsProcedure, "resource_exhausted", before)

			before = edgeCounts(t, cartv1connect.CartServiceGetCartProcedure)
			_, err = cart.GetCart(t.Context(), connect.NewRequest(&cartv1.GetCartRequest{}))
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("GetCart without a token: %v; want Unauthenticated", err)
			}
			wantCountedOnce(t, cartv1connect.CartServiceGetCartProcedure, "unauthenticated", before)

			before = edgeCounts(t, catalogv1connect.CatalogServiceGetProductProcedure)
			_, err = catalog.GetProduct(t.Context(), connect.NewRequest(&catalogv1.GetProductRequest{ProductId: "prd-1"}))
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Fatalf("a fourth call over a burst of 3: %v; want ResourceExhausted", err)
			}
			wantCountedOnce(t, catalogv1connect.CatalogServiceGetProductProcedure, "resource_exhausted", before)

			// A backend that answers: ok, and timed.
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			catalogv1.RegisterCatalogServiceServer(srv, deadlineCatalog{left: make(chan time.Duration, 1)})
			go func() { _ = srv.Serve(lis) }()
			t.Cleanup(srv.Stop)
			up := gatewayTo(t, lis.Addr().String(), time.Second)
			catalog = catalogv1connect.NewCatalogServiceClient(p.client(), "http://"+up.addr, p.opts...)
			before = edgeCounts(t, catalogv1connect.CatalogServiceListCategoriesProcedure)
			timed := edgeTimed(t, catalogv1connect.CatalogServiceListCategoriesProcedure)
			if _, err := catalog.ListCategories(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{})); err != nil {
				t.Fatal(err)
			}
			wantCountedOnce(t, catalogv1connect.CatalogServiceListCategoriesProcedure, "ok", before)
			if got := edgeTimed(t, catalogv1connect.CatalogServiceListCategoriesProcedure); got != timed+1 {
				t.Errorf("ListCategories timed %d times, was %d; want one more", got, timed)
			}

			// A method the service does not have: one value, however many are made up.
			before = edgeCounts(t, "unknown")
			unknown := connect.NewClient[catalogv1.ListCategoriesRequest, catalogv1.ListCategoriesResponse](p.client(),
				"http://"+up.addr+"/"+catalogv1connect.CatalogServiceName+"/NoSuchMethod", p.opts...)
			if _, err := unknown.CallUnary(t.Context(), connect.NewRequest(&catalogv1.ListCategoriesRequest{})); connect.CodeOf(err) != connect.CodeUnimplemented {
				t.Fatalf("an unknown method: %v; want Unimplemented", err)
			}
			wantCountedOnce(t, "unknown", "unimplemented", before)
		})
	}
}

// edgeTimed is how many calls of procedure handoff_edge_request_duration_seconds observed.
func edgeTimed(t *testing.T, procedure string) uint64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, f := range families {
		if f.GetName() != "handoff_edge_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			match := 0
			for _, l := range m.GetLabel() {
				if (l.GetName() == "edge" && l.GetValue() == "gateway") || (l.GetName() == "procedure" && l.GetValue() == procedure) {
					match++
				}
			}
			if match == 2 {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// A gRPC-web body that breaks the framing is the shopper's fault, refused InvalidArgument and
// counted so. Found by review: connect answered each of these Internal, counted as
// handoff_edge_requests_total{code="internal"}, on which HandoffEdgeFailing
// (deploy/prometheus/alerts.yml) pages the on-call, saying a service behind the edge is down.
func TestMalformedFramesAreCountedAsTheClientsFaultNotAsServerFailures(t *testing.T) {
	down := gatewayTo(t, testenv.FreeAddr(t), time.Second)
	proc := catalogv1connect.CatalogServiceListCategoriesProcedure
	bodies := map[string][]byte{
		"a length prefix past the body's end": {0, 0, 0, 0, 10, 0x08},
		"a truncated prefix":                  {0, 0, 0},
		"an unknown flag":                     {0x40, 0, 0, 0, 0},
		"compressed, no grpc-encoding":        {0x01, 0, 0, 0, 0},
	}
	for name, body := range bodies {
		before := edgeCounts(t, proc)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+down.addr+proc, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if got := res.Header.Get("Grpc-Status"); got != "3" {
			t.Errorf("%s: grpc-status %s %q; want 3 (InvalidArgument)", name, got, res.Header.Get("Grpc-Message"))
		}
		wantCountedOnce(t, proc, "invalid_argument", before)
	}
}

// A shopper's open WatchOrder is counted while it is open, at the gateway: a stream's life is
// no latency, and before, no edge metric showed streams at all until they ended.
func TestTheGatewayCountsItsOpenStreams(t *testing.T) {
	g := gatewayTo(t, orderBackend(t, watchForever{}), time.Second)
	open := func() float64 {
		return testenv.CounterSums(t, "handoff_edge_streams_open", map[string]string{"edge": "gateway"}, "procedure")[fulfilmentv1connect.OrderServiceWatchOrderProcedure]
	}
	before := open()
	tok, err := g.keys.Issue(auth.Principal{Subject: "erin", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, "http://"+g.addr, connect.WithGRPCWeb())
	req := connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
	req.Header().Set("Authorization", "Bearer "+tok)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := orders.WatchOrder(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("first message: %v", stream.Err())
	}
	if got := open(); got != before+1 {
		t.Fatalf("WatchOrder streams open at the gateway: %v with one open, %v before; want one more", got, before)
	}
	cancel()
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := open(); got != before {
			return fmt.Errorf("WatchOrder streams open after the shopper left: %v, %v before", got, before)
		}
		return nil
	})
}
