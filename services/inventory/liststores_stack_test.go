package inventory_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// ListStores over the whole system, as an operator calls it: inventory's admin port with an
// admin token. The demo chain's 50 stores and six more (two of each state) are paged through
// in small pages: every store once, in id order, whether or not it takes orders; the state
// filter keeps just those states; a token works only for the call it came from; and only an
// admin token is let in, at inventory's own port and nowhere at the gateway.
func TestListStoresPagesThroughEveryStoreToAnAdminOnly(t *testing.T) {
	ready := stacktest.Start(t)
	conn, err := grpc.NewClient(ready.ServiceAddrs[stack.TargetInventory], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	admin := inventoryv1.NewInventoryAdminServiceClient(conn)
	as := func(p auth.Principal, ttl time.Duration) context.Context {
		tok, err := ready.Keys.Issue(p, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	}
	ctx := as(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}, time.Hour)

	want := map[string]inventoryv1.StoreState{}
	for _, st := range demo.Seattle().Stores {
		want[st.ID] = inventoryv1.StoreState_STORE_STATE_OPEN
	}
	for i, state := range []inventoryv1.StoreState{
		inventoryv1.StoreState_STORE_STATE_OPEN, inventoryv1.StoreState_STORE_STATE_PAUSED, inventoryv1.StoreState_STORE_STATE_CLOSED,
		inventoryv1.StoreState_STORE_STATE_OPEN, inventoryv1.StoreState_STORE_STATE_PAUSED, inventoryv1.StoreState_STORE_STATE_CLOSED,
	} {
		id := fmt.Sprintf("lst-%02d", i)
		if _, err := admin.CreateStore(ctx, &inventoryv1.CreateStoreRequest{Store: storeAt(id, 47.5+float64(i)/100, -122.3)}); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		if state != inventoryv1.StoreState_STORE_STATE_OPEN {
			if _, err := admin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: id, State: state, Reason: "listing test"}); err != nil {
				t.Fatalf("%s to %v: %v", id, state, err)
			}
		}
		want[id] = state
	}

	// list pages through req's listing with pageSize, checking each page's order and size,
	// and returns the stores in the order they came; between is called after the first page.
	list := func(req *inventoryv1.ListStoresRequest, pageSize int32, between func()) []*inventoryv1.Store {
		t.Helper()
		var all []*inventoryv1.Store
		for page := 1; ; page++ {
			req.PageSize = pageSize
			res, err := admin.ListStores(ctx, req)
			if err != nil {
				t.Fatalf("page %d of %v: %v", page, req, err)
			}
			if n := len(res.GetStores()); n > int(pageSize) || n < int(pageSize) && res.GetNextPageToken() != "" {
				t.Fatalf("page %d: %d stores of at most %d, next page token %q", page, n, pageSize, res.GetNextPageToken())
			}
			all = append(all, res.GetStores()...)
			if req.PageToken = res.GetNextPageToken(); req.PageToken == "" {
				break
			}
			if page == 1 && between != nil {
				between()
			}
		}
		for i := 1; i < len(all); i++ {
			if all[i-1].GetId() >= all[i].GetId() {
				t.Fatalf("%s listed before %s: want each store once, by id", all[i-1].GetId(), all[i].GetId())
			}
		}
		return all
	}
	states := func(stores []*inventoryv1.Store) map[string]inventoryv1.StoreState {
		out := map[string]inventoryv1.StoreState{}
		for _, st := range stores {
			out[st.GetId()] = st.GetState()
		}
		return out
	}
	only := func(keep ...inventoryv1.StoreState) map[string]inventoryv1.StoreState {
		out := maps.Clone(want)
		maps.DeleteFunc(out, func(_ string, s inventoryv1.StoreState) bool { return !slices.Contains(keep, s) })
		return out
	}

	// Every store, 7 a page (8 pages of 56), each with what GetStore says of it.
	all := list(&inventoryv1.ListStoresRequest{}, 7, nil)
	if got := states(all); !maps.Equal(got, want) {
		t.Fatalf("listed %d stores %v; want the %d %v", len(got), got, len(want), want)
	}
	for _, st := range all {
		if st.GetOpenStatus() == nil || st.GetLocation() == nil || st.GetTimeZone() == "" || st.GetVersion() < 1 {
			t.Fatalf("store %s listed without its open status, location, zone or version: %v", st.GetId(), st)
		}
	}
	// A page size above the most is read as the most (500): one page.
	if res, err := admin.ListStores(ctx, &inventoryv1.ListStoresRequest{PageSize: 100_000}); err != nil || len(res.GetStores()) != len(want) || res.GetNextPageToken() != "" {
		t.Fatalf("page_size 100000: %d stores, next %q, %v; want all %d on one page", len(res.GetStores()), res.GetNextPageToken(), err, len(want))
	}

	// The filter, one state and two, through pages of 1 and 5.
	paused := []inventoryv1.StoreState{inventoryv1.StoreState_STORE_STATE_PAUSED}
	if got, w := states(list(&inventoryv1.ListStoresRequest{States: paused}, 1, nil)), only(paused...); !maps.Equal(got, w) {
		t.Errorf("paused stores: %v; want %v", got, w)
	}
	openOrClosed := []inventoryv1.StoreState{inventoryv1.StoreState_STORE_STATE_OPEN, inventoryv1.StoreState_STORE_STATE_CLOSED}
	if got, w := states(list(&inventoryv1.ListStoresRequest{States: openOrClosed}, 5, nil)), only(openOrClosed...); !maps.Equal(got, w) {
		t.Errorf("open or closed stores: %d %v; want %d %v", len(got), got, len(w), w)
	}

	// Stores created while paging: one before the position is not listed (it is on a page
	// already read), one after it is, and no store is listed twice.
	late := list(&inventoryv1.ListStoresRequest{}, 20, func() {
		for _, id := range []string{"aaa-early", "zzz-late"} {
			if _, err := admin.CreateStore(ctx, &inventoryv1.CreateStoreRequest{Store: storeAt(id, 47.6, -122.3)}); err != nil {
				t.Fatalf("create %s: %v", id, err)
			}
		}
	})
	if got := states(late); len(late) != len(want)+1 || got["zzz-late"] == 0 || got["aaa-early"] != 0 {
		t.Errorf("created while paging: %d listed (zzz-late %v, aaa-early %v); want %d, the later one listed", len(late), got["zzz-late"], got["aaa-early"], len(want)+1)
	}

	// A token is for the listing it came from, whatever the page size.
	first, err := admin.ListStores(ctx, &inventoryv1.ListStoresRequest{States: paused, PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page of paused stores: %v, %v", first, err)
	}
	if _, err := admin.ListStores(ctx, &inventoryv1.ListStoresRequest{States: paused, PageSize: 3, PageToken: first.GetNextPageToken()}); err != nil {
		t.Errorf("the next page with another page size: %v", err)
	}
	stock, err := admin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: demo.Seattle().Stores[0].ID, PageSize: 1})
	if err != nil || stock.GetNextPageToken() == "" {
		t.Fatalf("ListStock for a token: %v, %v", stock, err)
	}
	for name, req := range map[string]*inventoryv1.ListStoresRequest{
		"another state":       {States: openOrClosed, PageToken: first.GetNextPageToken()},
		"no state":            {PageToken: first.GetNextPageToken()},
		"ListStock's token":   {PageToken: stock.GetNextPageToken()},
		"a token cut short":   {States: paused, PageToken: first.GetNextPageToken()[:10]},
		"a made-up token":     {PageToken: "c3RvcmVz"},
		"a negative size":     {PageSize: -5},
		"an unknown state":    {States: []inventoryv1.StoreState{7}},
		"a state named twice": {States: []inventoryv1.StoreState{2, 2}},
	} {
		_, err := admin.ListStores(ctx, req)
		field := "page_token"
		switch {
		case req.PageSize < 0:
			field = "page_size"
		case len(req.States) > 0 && req.PageToken == "":
			field = "states["
		}
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), field) {
			t.Errorf("%s: %v; want InvalidArgument naming %s", name, err, field)
		}
	}
	if got := states(list(&inventoryv1.ListStoresRequest{}, 500, nil)); len(got) != len(want)+2 {
		t.Errorf("after the refusals: %d stores; want %d (the 56 and the 2 created while paging), nothing changed", len(got), len(want)+2)
	}

	// Only an admin token.
	for who, tc := range map[string]struct {
		ctx  context.Context
		code codes.Code
	}{
		"no token": {t.Context(), codes.Unauthenticated},
		"expired":  {as(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}, -time.Hour), codes.Unauthenticated},
		"customer": {as(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour), codes.PermissionDenied},
		"staff":    {as(auth.Principal{Subject: "till-1", Role: auth.RoleStaff, Stores: []string{"lst-00"}}, time.Hour), codes.PermissionDenied},
	} {
		if _, err := admin.ListStores(tc.ctx, &inventoryv1.ListStoresRequest{}); status.Code(err) != tc.code {
			t.Errorf("%s: %v; want %v", who, err, tc.code)
		}
	}
	// The gateway, the shoppers' door, does not serve it at all, not even to an admin.
	gw, err := grpc.NewClient(ready.GatewayAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	if _, err := inventoryv1.NewInventoryAdminServiceClient(gw).ListStores(ctx, &inventoryv1.ListStoresRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("ListStores at the gateway with an admin token: %v; want Unimplemented", err)
	}
}
