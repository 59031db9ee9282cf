// Package egress keeps outbound connections to URLs a caller chose (a store's vendor webhook,
// set through the admin API) off the networks behind Handoff: loopback (Handoff's own ports and
// its sidecars'), private ranges, link-local (cloud metadata at 169.254.169.254) and every other
// special-purpose range IANA lists, unless the operator allows a network. A URL that may be
// aimed anywhere would otherwise let whoever sets it probe and reach what only Handoff can.
//
// The check is made on the address each connection is about to use, after DNS
// (net.Dialer.Control), so a name that resolves to an inner address, or starts to (DNS
// rebinding), is refused as the address itself is. The ranges come from code.dny.dev/ssrf,
// generated from IANA's special-purpose registries.
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"code.dny.dev/ssrf"
)

// Guard decides which addresses outbound connections may reach: public ones, and those in the
// networks it allows. Safe for concurrent use.
type Guard struct {
	guardian *ssrf.Guardian
	setting  string
}

// New is a Guard allowing public addresses and the allowed networks. setting names, in its
// refusals, where an operator allows a network (a flag or environment variable).
func New(allowed []netip.Prefix, setting string) *Guard {
	var v4, v6 []netip.Prefix
	for _, p := range allowed {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return &Guard{
		// Any port: a vendor's endpoint may listen on 8443. Any TCP network: tcp4 and tcp6 are
		// what a dial resolves "tcp" to.
		guardian: ssrf.New(ssrf.WithAnyPort(), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...)),
		setting:  setting,
	}
}

// RefusedError is a connection the Guard refused.
type RefusedError struct {
	Addr    netip.Addr
	setting string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s is not a public address: outbound connections reach only public addresses and the networks %s allows", e.Addr, e.setting)
}

// Control refuses a connection to an address the Guard does not allow; it is a net.Dialer's
// Control, called with the address resolved.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("outbound connection to %q: %w", address, err)
	}
	if !strings.HasPrefix(network, "tcp") {
		return fmt.Errorf("outbound connection over %s: only TCP is allowed", network)
	}
	return g.CheckAddr(ap.Addr())
}

// CheckAddr refuses an address the Guard does not allow. An IPv4 address written as IPv6
// (::ffff:10.20.0.5) is judged as the IPv4 address it is.
func (g *Guard) CheckAddr(a netip.Addr) error {
	a = a.Unmap()
	if err := g.guardian.SafeAddr(a); err != nil {
		return &RefusedError{Addr: a, setting: g.setting}
	}
	return nil
}

// CheckHost refuses a URL's host that is itself an address the Guard does not allow, or
// localhost, when loopback is not allowed: such a URL can be refused when it is set, not only
// at its first connection. Other names are checked when they are connected to.
func (g *Guard) CheckHost(host string) error {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return g.CheckAddr(a.WithZone(""))
	}
	if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		// RFC 6761: localhost names are loopback, whatever a resolver says.
		return g.CheckAddr(netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	}
	return nil
}

// Transport is an http.Transport as http.DefaultTransport is, whose every connection the Guard
// checks, and which connects directly: never through a proxy from the environment
// (HTTPS_PROXY), which would connect wherever a name leads, past the Guard.
func (g *Guard) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.Control}
	t.DialContext = d.DialContext
	return t
}

// ParseNetworks parses a comma-separated list of CIDR ranges and addresses (an address is a
// network of one), as an operator writes it: "10.20.0.0/16, fd00:1::/64, 192.0.2.7".
func ParseNetworks(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for e := range strings.SplitSeq(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("%q: want a CIDR range such as 10.20.0.0/16 or an address: %w", e, err)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("%q has bits set past its /%d: did you mean %s?", e, p.Bits(), p.Masked())
			}
			if p.Addr().Is4In6() {
				// Connections to IPv4 addresses are checked as IPv4: so is this network.
				if p.Bits() < 96 {
					return nil, fmt.Errorf("%q is wider than the IPv4 addresses written as IPv6 (::ffff:0:0/96): write IPv4 networks as such", e)
				}
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, fmt.Errorf("%q: want a CIDR range such as 10.20.0.0/16 or an address: %w", e, err)
		}
		if a.Zone() != "" {
			return nil, errors.New("an address with a zone (" + e + ") names no network: leave the zone out")
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
