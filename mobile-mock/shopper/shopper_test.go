package shopper

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

// countingConn counts the writes made on a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func TestUnaryCallGoesInOneWrite(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(cartv1connect.NewCartServiceHandler(cartv1connect.UnimplementedCartServiceHandler{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	var writes atomic.Int64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &writes}, nil
	}
	client := httpClient(4, dial)
	app := New(client, srv.URL, "a-token")

	for i := range 3 {
		before := writes.Load()
		_, err := app.Cart.AddLine(context.Background(), connect.NewRequest(&cartv1.AddLineRequest{CartId: "c1", Sku: "LATTE-16", Quantity: 2}))
		if connect.CodeOf(err) != connect.CodeUnimplemented {
			t.Fatalf("call %d: %v, want the handler's Unimplemented", i, err)
		}
		if n := writes.Load() - before; n != 1 {
			t.Errorf("call %d took %d writes, want headers and body in 1", i, n)
		}
	}
}

func TestOneWriteLeavesOtherRequestsAlone(t *testing.T) {
	var got []*http.Request
	next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = append(got, r)
		return nil, errors.New("not sent")
	})
	rt := oneWrite{next}
	// No body, and a body of unknown length (a client stream's), go as they are: the same
	// request, its body unread.
	reqs := []*http.Request{
		httptest.NewRequest(http.MethodGet, "http://x/", nil),
		{Method: http.MethodPost, Body: io.NopCloser(strings.NewReader("a stream")), ContentLength: -1, Header: http.Header{}},
	}
	for _, req := range reqs {
		if _, err := rt.RoundTrip(req); err == nil || err.Error() != "not sent" {
			t.Fatalf("RoundTrip: %v", err)
		}
	}
	if len(got) != 2 || got[0] != reqs[0] || got[1] != reqs[1] {
		t.Fatalf("passed on %v, want the requests themselves", got)
	}
	if b, _ := io.ReadAll(got[1].Body); string(b) != "a stream" {
		t.Errorf("the stream's body was read ahead: %q left", b)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The shopper app shows amounts in their currency's own minor unit, dollars with their sign.
func TestMoneyShowsEachCurrencysOwnMinorUnit(t *testing.T) {
	for _, c := range []struct {
		m    *commonv1.Money
		want string
	}{
		{&commonv1.Money{AmountMinor: 450, CurrencyCode: "USD"}, "$4.50"},
		{&commonv1.Money{AmountMinor: -450, CurrencyCode: "USD"}, "-$4.50"},
		{&commonv1.Money{AmountMinor: 1200, CurrencyCode: "EUR"}, "12.00 EUR"},
		{&commonv1.Money{AmountMinor: 1500, CurrencyCode: "KWD"}, "1.500 KWD"},
		{&commonv1.Money{AmountMinor: 500, CurrencyCode: "JPY"}, "500 JPY"},
		{nil, "-"},
	} {
		if got := Money(c.m); got != c.want {
			t.Errorf("Money(%v) = %q, want %q", c.m, got, c.want)
		}
	}
}
