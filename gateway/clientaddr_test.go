package gateway_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
)

// Behind a load balancer every shopper's calls come from the balancer's address: with it
// trusted, each shopper has the allowance of the address the balancer saw, and what a client
// writes into X-Forwarded-For itself changes nothing. Untrusted, the header is ignored.
func TestShoppersBehindATrustedProxyHaveTheirOwnAddressLimits(t *testing.T) {
	// An address's allowance refills once in 100 s: the calls after the limit trips must find it
	// still spent however slowly a loaded machine makes them (at 2/s, one did not, once).
	limits := gateway.RateLimits{PerCaller: 5, PerCallerBurst: 3, PerAddress: 0.01, PerAddressBurst: 3, Checkout: 1, CheckoutBurst: 1}
	for _, c := range []struct {
		name    string
		trusted []net.IPNet
	}{
		{"proxy trusted", []net.IPNet{
			{IP: net.IPv4(127, 0, 0, 0), Mask: net.CIDRMask(8, 32)},
			{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)},
		}},
		{"proxy not trusted", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ready := stacktest.Start(t, func(sc *stack.Config) {
				sc.RateLimits = limits
				sc.TrustedProxies = c.trusted
			})
			catalog := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+ready.GatewayAddr, connect.WithGRPCWeb())
			// call is an anonymous call through the proxy, whose X-Forwarded-For is xff.
			call := func(xff string) error {
				req := connect.NewRequest(&catalogv1.ListCategoriesRequest{})
				req.Header().Set("X-Forwarded-For", xff)
				_, err := catalog.ListCategories(context.Background(), req)
				return err
			}
			limited := false
			for range 10 {
				if err := call("203.0.113.1"); connect.CodeOf(err) == connect.CodeResourceExhausted {
					limited = true
					break
				} else if err != nil {
					t.Fatalf("a shopper's call: %v", err)
				}
			}
			if !limited {
				t.Fatal("10 quick calls from one shopper over a burst of 3 were never limited")
			}
			spoofed := call("192.0.2.99, 203.0.113.1")
			other := call("203.0.113.2")
			if c.trusted == nil {
				if connect.CodeOf(other) != connect.CodeResourceExhausted {
					t.Fatalf("with no trusted proxy, a call naming another client in X-Forwarded-For: %v; want the peer's limit, ResourceExhausted", other)
				}
				return
			}
			if connect.CodeOf(spoofed) != connect.CodeResourceExhausted {
				t.Fatalf("the limited shopper writing another address before the proxy's: %v; want still limited", spoofed)
			}
			if other != nil {
				t.Fatalf("another shopper behind the same proxy: %v; want its own allowance", other)
			}
		})
	}
}

// A customer and a staff member with the same id (from two systems) each have their own
// per-token allowance: one spending it does not limit the other.
func TestCallersWithOneIDInTwoRolesHaveTheirOwnLimits(t *testing.T) {
	ready := stacktest.Start(t, func(sc *stack.Config) {
		sc.RateLimits = gateway.RateLimits{PerCaller: 0.01, PerCallerBurst: 3, PerAddress: 50, PerAddressBurst: 100, Checkout: 1, CheckoutBurst: 1}
	})
	call := func(p auth.Principal) error {
		tok, err := ready.Keys.Issue(p, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c := catalogv1connect.NewCatalogServiceClient(http.DefaultClient, "http://"+ready.GatewayAddr, connect.WithInterceptors(bearer(tok)))
		_, err = c.ListCategories(context.Background(), connect.NewRequest(&catalogv1.ListCategoriesRequest{}))
		return err
	}
	customer := auth.Principal{Subject: "1042", Role: auth.RoleCustomer}
	limited := false
	for range 10 {
		if err := call(customer); connect.CodeOf(err) == connect.CodeResourceExhausted {
			limited = true
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !limited {
		t.Fatal("10 quick calls with one token over a burst of 3 were never limited")
	}
	if err := call(auth.Principal{Subject: "1042", Role: auth.RoleStaff, Stores: []string{"sea-capitol-hill-01"}}); err != nil {
		t.Fatalf("staff member 1042 while customer 1042 is limited: %v; want its own allowance", err)
	}
}
