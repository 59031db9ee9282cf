// Package shopper is the mobile app's side of Handoff: the shopper-facing services (catalog,
// store locator, cart, orders) reached through the gateway over gRPC-web, the protocol browsers
// and mobile apps use, with the shopper's token on every call.
package shopper

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/money"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
	"github.com/handoff-dev/handoff/proto/handoff/inventory/v1/inventoryv1connect"
)

// App is a connection to the gateway: every shopper-facing service, each call carrying a
// shopper's bearer token.
type App struct {
	Catalog catalogv1connect.CatalogServiceClient
	Locator inventoryv1connect.StoreLocatorServiceClient
	Cart    cartv1connect.CartServiceClient
	Orders  fulfilmentv1connect.OrderServiceClient
}

// New connects to the gateway at gatewayURL ("http://127.0.0.1:8080") over gRPC-web as the
// shopper holding token. With an empty token each call carries the token its context holds
// (WithToken), or none, so one App can serve many shoppers. Many Apps may share one HTTP client.
// opts add to the clients' options (interceptors that time calls, say).
func New(httpClient *http.Client, gatewayURL, token string, opts ...connect.ClientOption) *App {
	opts = append([]connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(Bearer(token))}, opts...)
	return &App{
		Catalog: catalogv1connect.NewCatalogServiceClient(httpClient, gatewayURL, opts...),
		Locator: inventoryv1connect.NewStoreLocatorServiceClient(httpClient, gatewayURL, opts...),
		Cart:    cartv1connect.NewCartServiceClient(httpClient, gatewayURL, opts...),
		Orders:  fulfilmentv1connect.NewOrderServiceClient(httpClient, gatewayURL, opts...),
	}
}

type tokenKey struct{}

// WithToken makes calls with ctx carry token, on Apps made without one.
func WithToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// HTTPClient returns a client suited to many concurrent gRPC-web calls and streams over
// HTTP/1.1: each call in flight holds its own connection, so the idle pool must be as large as
// the concurrency or connections are opened and closed on every call.
func HTTPClient(maxConns int) *http.Client {
	return httpClient(maxConns, (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
}

func httpClient(maxConns int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{Transport: oneWrite{&http.Transport{
		DialContext:         dial,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}}
}

// oneWrite sends a small request whose length is known (every unary call) in one write, headers
// and body together. connect hands net/http a unary body of its own type, which net/http does
// not know to be in memory, so it flushes the headers first: two writes (and two packets) per
// call instead of one. Load runs measure the whole machine, the generator included, and this
// was about 1.5% of the process's CPU.
type oneWrite struct{ next http.RoundTripper }

// oneWriteMax bounds the bodies read ahead; larger ones go as connect gave them.
const oneWriteMax = 64 << 10

func (t oneWrite) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength <= 0 || req.ContentLength > oneWriteMax {
		return t.next.RoundTrip(req)
	}
	body := make([]byte, req.ContentLength)
	_, err := io.ReadFull(req.Body, body)
	req.Body.Close() // a RoundTripper closes the body it was given, whatever happens
	if err != nil {
		return nil, fmt.Errorf("read request body ahead: %w", err)
	}
	// A RoundTripper must not change the caller's request: send a shallow copy.
	r := *req
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return t.next.RoundTrip(&r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the transport.
func (t oneWrite) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Bearer adds "Authorization: Bearer token" to every request, unary or streaming; with an
// empty token, the token of the call's context (WithToken), if any.
func Bearer(token string) connect.Interceptor { return bearer(token) }

type bearer string

func (b bearer) set(ctx context.Context, h http.Header) {
	token := string(b)
	if token == "" {
		token, _ = ctx.Value(tokenKey{}).(string)
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
}

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		b.set(ctx, req.Header())
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(ctx, conn.RequestHeader())
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// WatchAgain reports whether a server stream (WatchOrder) that failed with err is worth
// opening again, as an app does: a service draining ends its streams with Unavailable to be
// called again, and a proxy or the network may cut one. Not when it was refused for what
// calling again cannot change: a bad request, the order unknown, the shopper not allowed.
func WatchAgain(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodePermissionDenied,
		connect.CodeUnauthenticated, connect.CodeUnimplemented:
		return false
	}
	return true
}

// Money formats an amount for people, in its currency's own minor unit: "$4.50", "12.00 EUR",
// "1.500 KWD".
func Money(m *commonv1.Money) string {
	if m == nil {
		return "-"
	}
	if m.GetCurrencyCode() != "USD" {
		return money.Format(m.GetAmountMinor(), m.GetCurrencyCode())
	}
	amount := strings.TrimSuffix(money.Format(m.GetAmountMinor(), "USD"), " USD")
	if rest, negative := strings.CutPrefix(amount, "-"); negative {
		return "-$" + rest
	}
	return "$" + amount
}
