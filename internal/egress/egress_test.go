package egress_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/egress"
)

func TestOnlyPublicAddressesAndAllowedNetworksAreReached(t *testing.T) {
	g := egress.New([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("fd00:1::/64")}, "THE_SETTING")
	for _, a := range []string{
		"127.0.0.1", "127.8.9.10", "::1", // loopback: Handoff's own ports
		"10.21.0.5", "172.16.3.4", "192.168.1.20", "fd00:2::1", // private, outside what is allowed
		"169.254.169.254", "fe80::1", // link-local: cloud metadata
		"100.100.100.200",                       // shared (CGNAT) space: a cloud's metadata too
		"0.0.0.0", "::", "224.0.0.1", "ff02::1", // unspecified, multicast
		"::ffff:127.0.0.1", "::ffff:10.21.0.5", // IPv4 in IPv6 clothing
		"64:ff9b::7f00:1", // NAT64 of 127.0.0.1
		"192.0.2.7", "198.18.0.1", "240.0.0.1", "255.255.255.255",
	} {
		err := g.CheckAddr(netip.MustParseAddr(a))
		var refused *egress.RefusedError
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), "not a public address") || !strings.Contains(err.Error(), "THE_SETTING") {
			t.Errorf("%s: %v; want it refused, naming the setting", a, err)
		}
	}
	for _, a := range []string{"8.8.8.8", "2606:4700::1111", "10.20.0.5", "10.20.255.255", "fd00:1::7", "::ffff:10.20.0.5", "::ffff:8.8.8.8"} {
		if err := g.CheckAddr(netip.MustParseAddr(a)); err != nil {
			t.Errorf("%s: %v; want it reached", a, err)
		}
	}
}

func TestAURLsHostIsCheckedWhenItIsAnAddressOrLocalhost(t *testing.T) {
	g := egress.New(nil, "S")
	for _, h := range []string{"127.0.0.1", "[::1]", "::1", "fe80::1%25eth0", "fe80::1%eth0", "localhost", "LOCALHOST.", "tills.localhost", "169.254.169.254"} {
		if err := g.CheckHost(h); err == nil {
			t.Errorf("host %q: taken; want it refused", h)
		}
	}
	for _, h := range []string{"pos.vendor.example", "8.8.8.8", "[2606:4700::1111]", "localhost.vendor.example"} {
		if err := g.CheckHost(h); err != nil {
			t.Errorf("host %q: %v; want it taken (names are checked when connected to)", h, err)
		}
	}
	if err := egress.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "S").CheckHost("localhost"); err != nil {
		t.Errorf("localhost with loopback allowed: %v", err)
	}
}

// The check is made on the address a connection is about to use, after the name is looked up:
// "localhost" resolves to loopback however it is spelt in the URL.
func TestTheTransportRefusesANameThatResolvesBehindHandoff(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	url := "http://localhost:" + port + "/hook"

	closed := egress.New(nil, "S").Transport()
	t.Cleanup(closed.CloseIdleConnections)
	_, err = (&http.Client{Transport: closed}).Get(url)
	var refused *egress.RefusedError
	if !errors.As(err, &refused) || !refused.Addr.IsLoopback() {
		t.Fatalf("GET %s with nothing allowed: %v; want it refused at the loopback address", url, err)
	}

	open := egress.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, "S").Transport()
	t.Cleanup(open.CloseIdleConnections)
	res, err := (&http.Client{Transport: open}).Get(url)
	if err != nil {
		t.Fatalf("GET %s with loopback allowed: %v", url, err)
	}
	res.Body.Close()
}

func TestNetworksAreParsedAsOperatorsWriteThem(t *testing.T) {
	got, err := egress.ParseNetworks(" 10.20.0.0/16, fd00:1::/64,192.0.2.7 ,, ::1, ::ffff:10.30.0.0/112, ::ffff:10.40.0.9")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.20.0.0/16", "fd00:1::/64", "192.0.2.7/32", "::1/128", "10.30.0.0/16", "10.40.0.9/32"}
	if len(got) != len(want) {
		t.Fatalf("parsed %v; want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("parsed %v; want %v", got, want)
		}
	}
	if n, err := egress.ParseNetworks(""); err != nil || n != nil {
		t.Fatalf("an empty list: %v, %v; want none", n, err)
	}
	for _, bad := range []string{"10.20.0.0/33", "10.20.0.1/16", "vendor.example", "fe80::1%eth0", "10.0.0.0/8 192.168.0.0/16", "::ffff:0:0/80"} {
		if _, err := egress.ParseNetworks(bad); err == nil {
			t.Errorf("%q: parsed; want it refused", bad)
		}
	}
}

// A proxy from the environment (HTTPS_PROXY) would connect wherever a name leads, past the
// Guard, which would see only the proxy's address: the Guard's transport connects directly.
// (net/http reads the environment once per process and never proxies loopback, so a proxy
// started here could not show it: the transport's setting is what decides.)
func TestTheTransportUsesNoProxyFromTheEnvironment(t *testing.T) {
	if tr := egress.New(nil, "S").Transport(); tr.Proxy != nil {
		t.Fatal("the guarded transport takes a proxy from the environment; want direct connections only")
	}
}
