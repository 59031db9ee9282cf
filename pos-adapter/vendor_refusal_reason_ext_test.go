package posadapter_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// refusingInventory is an inventory gRPC server whose AdjustStock and SetStock answer with the
// refusal the test sets.
type refusingInventory struct {
	inventoryv1.UnimplementedInventoryAdminServiceServer
	mu     sync.Mutex
	refuse error
}

func (r *refusingInventory) set(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = err
}

func (r *refusingInventory) AdjustStock(context.Context, *inventoryv1.AdjustStockRequest) (*inventoryv1.AdjustStockResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return nil, r.refuse
}

func (r *refusingInventory) SetStock(context.Context, *inventoryv1.SetStockRequest) (*inventoryv1.SetStockResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return nil, r.refuse
}

func withRefusingInventory(t *testing.T, inv *refusingInventory) envOption {
	gs := grpc.NewServer()
	inventoryv1.RegisterInventoryAdminServiceServer(gs, inv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return withConfig(func(c *posadapter.Config) { c.Inventory = anyStore{cc} })
}

func refusal(reason, format string, args ...any) error {
	st := status.Newf(codes.FailedPrecondition, format, args...)
	if reason != "" {
		st, _ = st.WithDetails(&errdetails.ErrorInfo{Domain: "inventory.handoff.dev", Reason: reason})
	}
	return st.Err()
}

// The adapter tells a refusal for the stock as it stands (deferred: the vendor retries, and a
// later count may make it fit) from one for good (refused) by the reason inventory attaches
// (google.rpc.ErrorInfo), over gRPC, not by the message's words: a reworded message changes
// nothing, and a reason wins over words that read otherwise. A refusal without a reason (an
// inventory copy from before them, in a rolling upgrade) is still told from its text.
func TestVendorRefusalIsDeferredOrFinalByInventorysReasonNotItsWording(t *testing.T) {
	inv := &refusingInventory{}
	e := newEnv(t, withRefusingInventory(t, inv))
	secret := e.vendorWebhook("ven-r1")
	for i, tc := range []struct {
		name, typ string
		refuse    error
		deferred  bool
	}{
		{"below zero, reworded", "sale", refusal("STOCK_BELOW_ZERO", "quantity: not enough MUFFIN-1 on hand at ven-r1"), true},
		{"below reserved, reworded", "sale", refusal("STOCK_BELOW_RESERVED", "quantity: 4 units are held for open orders"), true},
		{"a count below reserved, reworded", "count", refusal("STOCK_BELOW_RESERVED", "quantity: the count is under what is held"), true},
		{"above the maximum, in words that read as below", "return", refusal("STOCK_ABOVE_MAXIMUM", "delta: 5 would take on hand below the cap"), false},
		{"below zero, in words that read as above", "sale", refusal("STOCK_BELOW_ZERO", "delta: -5 would take on hand above nothing, below 0"), true},
		{"another reason", "sale", refusal("SOMETHING_ELSE", "delta: -5 would take on hand below 0"), false},
		{"no reason: an older inventory's text", "sale", refusal("", "delta: -5 would take on hand of MUFFIN-1 at ven-r1 below 0 (on hand 0)"), true},
		{"no reason: an older inventory's maximum", "return", refusal("", "delta: 5 would take on hand of MUFFIN-1 at ven-r1 above 1000000000"), false},
		{"no reason, no field", "sale", refusal("", "something else went wrong"), false},
	} {
		inv.set(tc.refuse)
		code, out := e.vendorPost("ven-r1", secret, time.Now(), vendorEvent(fmt.Sprintf("ev-%d", i), tc.typ, "MUFFIN-1", 5), nil)
		switch {
		case tc.deferred && (code != http.StatusServiceUnavailable || out.Status != "deferred"):
			t.Errorf("%s: HTTP %d %+v; want 503 deferred (the vendor retries)", tc.name, code, out)
		case !tc.deferred && (code != http.StatusUnprocessableEntity || out.Status != "refused"):
			t.Errorf("%s: HTTP %d %+v; want 422 refused for good", tc.name, code, out)
		}
	}
}
