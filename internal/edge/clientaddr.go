package edge

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/realclientip/realclientip-go"
)

// ParseTrustedProxies reads a comma-separated list of addresses and CIDR ranges (10.0.0.0/8,
// 2001:db8::1) of the reverse proxies in front of an edge. Empty means none.
func ParseTrustedProxies(list string) ([]net.IPNet, error) {
	var entries []string
	for e := range strings.SplitSeq(list, ",") {
		if e = strings.TrimSpace(e); e != "" {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		return nil, nil
	}
	nets, err := realclientip.AddressesAndRangesToIPNets(entries...)
	if err != nil {
		return nil, fmt.Errorf("trusted proxies %q: want addresses and CIDR ranges such as 10.0.0.0/8, without zones: %w", list, err)
	}
	return nets, nil
}

// WithClientAddress makes each request's RemoteAddr its client's address when it came through
// one of the trusted reverse proxies: the rightmost address in X-Forwarded-For that is not a
// trusted proxy's. Behind an L7 load balancer every request's peer is the balancer, so without
// this every shopper would share one address's rate limits (and a store's terminals one
// refused-credential allowance). Only a trusted peer's header is believed: anyone may send one,
// and a client that could pick its own address would get a fresh allowance each call. Addresses
// left of the first untrusted one were written by the client and are ignored for the same
// reason. A request through a trusted proxy without a usable header keeps the proxy's address.
func WithClientAddress(h http.Handler, trusted []net.IPNet) http.Handler {
	if len(trusted) == 0 {
		return h
	}
	fromHeader, err := realclientip.NewRightmostTrustedRangeStrategy("X-Forwarded-For", trusted)
	if err != nil {
		// Only a bad header name fails, and the name is fixed.
		panic(fmt.Sprintf("edge: client address strategy: %v", err))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !peerTrusted(r.RemoteAddr, trusted) {
			h.ServeHTTP(w, r)
			return
		}
		client := fromHeader.ClientIP(r.Header, r.RemoteAddr)
		if client == "" {
			h.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(r.Context()) // a copy: the server's request is not ours to change
		r.RemoteAddr = net.JoinHostPort(client, "0")
		h.ServeHTTP(w, r)
	})
}

// peerTrusted reports whether the peer address ("host:port") is one of the trusted proxies.
func peerTrusted(remoteAddr string, trusted []net.IPNet) bool {
	_, ip, ok := peerIP(remoteAddr)
	if !ok {
		return false
	}
	for _, n := range trusted {
		if n.Contains(ip.AsSlice()) {
			return true
		}
	}
	return false
}
