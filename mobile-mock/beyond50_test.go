package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/mobile-mock/load"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// A chain with more than 50 stores in the shoppers' area (the demo chain's 50 and one more,
// north of them all): a run's orders land at the 51st store, which FindStores, 50 stores at
// most, does not return from the centre. Its stock is taken before the clock all the same, so
// the run checks its units against it and, nothing being oversold, exits 0. Before, the load
// took the stock of the 50 nearest stores only, counted the 51st's units unchecked and exited 1
// saying stock "was oversold, inventory's invariants do not hold, or they could not be checked".
// The load finds the stores by paging through ListStores (500 a page, by id): a page's worth of
// stores in Portland, out of the shoppers' reach, whose ids come first, puts the 51st on the
// second page, so a load that read only the first would miss it.
func TestALoadChecksTheStockOfStoresBeyondTheNearest50(t *testing.T) {
	ready, flags := startHandoff(t)
	ctx, cc := inventoryAdmin(t, ready, flags)
	locator := inventoryv1.NewStoreLocatorServiceClient(cc)
	admin := inventoryv1.NewInventoryAdminServiceClient(cc)
	found, err := locator.FindStores(ctx, &inventoryv1.FindStoresRequest{Location: load.DemoCityCentre, RadiusMeters: 100_000, MaxResults: 50, IncludeNotAccepting: true})
	if err != nil || len(found.GetStores()) != 50 {
		t.Fatalf("the demo chain's 50 stores: %d, %v", len(found.GetStores()), err)
	}
	// The hot SKU is sold out at every demo store: the run's orders can land only at the new one.
	var open *inventoryv1.Store
	for _, m := range found.GetStores() {
		id := m.GetStore().GetId()
		if _, err := admin.SetStock(ctx, &inventoryv1.SetStockRequest{StoreId: id, Sku: "LATTE-16", OnHand: 0, IdempotencyKey: "sold-out-" + id}); err != nil {
			t.Fatalf("sell out LATTE-16 at %s: %v", id, err)
		}
		if open == nil && m.GetStore().GetOpenStatus().GetAcceptingOrders() {
			open = m.GetStore()
		}
	}
	if open == nil {
		t.Fatal("no demo store takes orders now")
	}
	// A copy of an open store 3 km north of the northernmost demo store (47.7226): farther from
	// the centre than any of them, so the 51st by distance, and inside the shoppers' area
	// (within -radius of every point they order from).
	st := open
	st.Id, st.Name = "north-51", "North 51"
	st.Location = &commonv1.LatLng{Latitude: 47.7500, Longitude: -122.3400}
	st.OpenStatus, st.Version, st.CreateTime, st.UpdateTime = nil, 0, nil, nil
	if _, err := admin.CreateStore(ctx, &inventoryv1.CreateStoreRequest{Store: st}); err != nil {
		t.Fatalf("create store: %v", err)
	}
	if _, err := admin.SetStock(ctx, &inventoryv1.SetStockRequest{StoreId: st.Id, Sku: "LATTE-16", OnHand: 50, IdempotencyKey: "north-51-stock"}); err != nil {
		t.Fatalf("stock: %v", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range 500 {
		far := proto.CloneOf(st)
		far.Id, far.Name = fmt.Sprintf("far-%03d", i), fmt.Sprintf("Portland %d", i)
		far.Location = &commonv1.LatLng{Latitude: 45.5 + float64(i%25)/100, Longitude: -122.7 + float64(i/25)/100}
		g.Go(func() error {
			_, err := admin.CreateStore(gctx, &inventoryv1.CreateStoreRequest{Store: far})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("create the stores in Portland: %v", err)
	}

	// No -near: shoppers order from random points over the area of the 50 stores found.
	out := filepath.Join(t.TempDir(), "load.json")
	args := append([]string{"load", "-quiet", "-basket", "-shoppers", "2", "-orders", "4", "-hot-sku", "LATTE-16", "-radius", "50000",
		"-inventory", ready.ServiceAddrs[stack.TargetInventory], "-out", out}, flags...)
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, noEnv, &stdout, &stderr)
	t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	if !strings.Contains(stdout.String(), " 0 rejected") || !strings.Contains(stdout.String(), "4 confirmed") {
		t.Fatalf("want the 4 checkouts confirmed at the new store; the scenario did not happen")
	}
	if code != 0 || strings.Contains(stdout.String(), "not snapshotted") || strings.Contains(stdout.String(), "not taken") {
		t.Errorf("a load whose orders landed at a 51st store, nothing oversold, exited %d; want 0 with every unit checked", code)
	}
	var res load.Result
	if b, err := os.ReadFile(out); err != nil || json.Unmarshal(b, &res) != nil {
		t.Fatalf("-out: %v", err)
	}
	if res.StoresSnapshotted != 51 || res.UncheckedUnits != 0 || res.ConfirmedUnits != 4 || res.OversoldUnits != 0 {
		t.Errorf("stock of %d stores taken, %d of %d units unchecked, %d oversold; want the 51 stores' stock taken, the 4 units checked, none oversold",
			res.StoresSnapshotted, res.UncheckedUnits, res.ConfirmedUnits, res.OversoldUnits)
	}
}
