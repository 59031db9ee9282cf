package edge_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/handoff-dev/handoff/internal/edge"
)

func TestClientAddressIsBelievedOnlyFromTrustedProxies(t *testing.T) {
	trusted, err := edge.ParseTrustedProxies(" 10.0.0.0/8, 2001:db8::1 ,")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer string
		xff        []string // header lines, in order
		want       string   // the client's key for rate limits
	}{
		{"a peer that is no proxy writes what it likes", "198.51.100.7:5000", []string{"203.0.113.1"}, "198.51.100.7"},
		{"through the proxy", "10.1.2.3:5000", []string{"203.0.113.1"}, "203.0.113.1"},
		{"through two proxies", "10.1.2.3:5000", []string{"203.0.113.1, 10.9.9.9"}, "203.0.113.1"},
		{"the client's own entries before the proxy's are not believed", "10.1.2.3:5000", []string{"192.0.2.66, 203.0.113.1"}, "203.0.113.1"},
		{"header lines read as one list", "10.1.2.3:5000", []string{"192.0.2.66", "203.0.113.1, 10.9.9.9"}, "203.0.113.1"},
		{"through the proxy without the header", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"the proxy's entry unreadable", "10.1.2.3:5000", []string{"203.0.113.1, not-an-address"}, "10.1.2.3"},
		{"only proxies listed", "10.1.2.3:5000", []string{"10.4.4.4"}, "10.1.2.3"},
		{"an IPv6 client through an IPv6 proxy", "[2001:db8::1]:5000", []string{"2001:db8:aaaa:bbbb:1::2"}, "2001:db8:aaaa:bbbb::/64"},
		{"an IPv4 proxy seen as IPv6", "[::ffff:10.1.2.3]:5000", []string{"203.0.113.1"}, "203.0.113.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got string
			h := edge.WithClientAddress(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				got = edge.ClientKey(r.RemoteAddr)
			}), trusted)
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.RemoteAddr = c.peer
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != c.want {
				t.Fatalf("client %q; want %q", got, c.want)
			}
			if r.RemoteAddr != c.peer {
				t.Fatalf("the server's request was changed: RemoteAddr %q", r.RemoteAddr)
			}
		})
	}
}

func TestTrustedProxiesRefuseWhatIsNoAddress(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "proxy.internal", "fe80::1%eth0", "10.0.0.0/8,,300.1.1.1"} {
		if _, err := edge.ParseTrustedProxies(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if n, err := edge.ParseTrustedProxies(" , "); err != nil || n != nil {
		t.Errorf("an empty list: %v, %v; want none", n, err)
	}
}
