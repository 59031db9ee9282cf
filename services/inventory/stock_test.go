package inventory_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

func TestAdjustStockRetriedWithItsKeyAppliesOnce(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "BEAN", 10, 2)

	req := &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "BEAN", Delta: 5, Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY,
		IdempotencyKey: "delivery-0042", Note: "pallet 42"}
	first, err := e.admin.AdjustStock(e.ctx(), req)
	if err != nil {
		t.Fatal(err)
	}
	if l := first.GetLevel(); l.GetOnHand() != 15 || l.GetSafetyStock() != 2 || l.GetAvailable() != 13 {
		t.Errorf("after delivery: %v", l)
	}
	// Something else changes stock; the retry still answers with the original result.
	e.setStock("s1", "BEAN", 20, 2)
	for range 3 {
		again, err := e.admin.AdjustStock(e.ctx(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(again.GetMovement(), first.GetMovement()) || again.GetLevel().GetOnHand() != 15 {
			t.Fatalf("retry answered %v, want the original %v", again, first)
		}
	}
	if l := e.level("s1", "BEAN"); l.GetOnHand() != 20 {
		t.Errorf("on hand %d after retries, want 20", l.GetOnHand())
	}
	other := proto.Clone(req).(*inventoryv1.AdjustStockRequest)
	other.Delta = 6
	_, err = e.admin.AdjustStock(e.ctx(), other)
	requireStatus(t, err, codes.FailedPrecondition, "idempotency_key")

	// The same key used at once by many callers: one change.
	race := &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "BEAN", Delta: -1, Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "till-7"}
	errs := make(chan error, 8)
	for range 8 {
		go func() { _, err := e.admin.AdjustStock(e.ctx(), race); errs <- err }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent retry: %v", err)
		}
	}
	if l := e.level("s1", "BEAN"); l.GetOnHand() != 19 {
		t.Errorf("on hand %d after eight copies of one sale, want 19", l.GetOnHand())
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

func TestAdjustmentBelowReservedIsRefusedAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "CAKE", 5, 0)
	e.mustReserve(order("o1", "s1", "CAKE", 4))
	before := e.count(`SELECT count(*) FROM movements`)

	_, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "CAKE", Delta: -2,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE, IdempotencyKey: "dropped-tray"})
	requireStatus(t, err, codes.FailedPrecondition, "reserved")
	_, err = e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "CAKE", OnHand: 3, IdempotencyKey: "count-1"})
	requireStatus(t, err, codes.FailedPrecondition, "reserved")
	if l := e.level("s1", "CAKE"); l.GetOnHand() != 5 || l.GetReserved() != 4 {
		t.Errorf("level %v after refused changes; want on hand 5, reserved 4", l)
	}
	if after := e.count(`SELECT count(*) FROM movements`); after != before {
		t.Errorf("refused changes wrote %d ledger rows", after-before)
	}
	// Down to what is reserved is allowed.
	res, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "CAKE", Delta: -1,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE, IdempotencyKey: "dropped-one"})
	if err != nil || res.GetLevel().GetOnHand() != 4 || res.GetLevel().GetAvailable() != 0 {
		t.Fatalf("adjust to reserved: %v, %v", res, err)
	}
	// Wrong sign for the reason.
	_, err = e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "CAKE", Delta: 3,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE, IdempotencyKey: "k"})
	requireStatus(t, err, codes.InvalidArgument, "delta")
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A change that has already happened in the store, asked with clamp_to_reserved, goes as low
// as what is reserved instead of being refused, the shortfall in the ledger; a retry with its
// key is the same change; the invariants hold.
func TestClampedChangesStopAtWhatIsReserved(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "CAKE", 10, 0)
	e.mustReserve(order("o1", "s1", "CAKE", 6))
	sale := &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "CAKE", Delta: -7, ClampToReserved: true,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "till-sale-1", Note: "till 3"}
	for _, what := range []string{"a sale past what is reserved", "the same sale again"} {
		res, err := e.admin.AdjustStock(e.ctx(), sale)
		if err != nil || res.GetLevel().GetOnHand() != 6 || res.GetLevel().GetAvailable() != 0 ||
			res.GetMovement().GetOnHandDelta() != -4 || !strings.Contains(res.GetMovement().GetNote(), "till 3 [3 units short") {
			t.Fatalf("%s: %v, %v; want on hand 6 (the reserved), a movement of -4 noting 3 units short", what, res, err)
		}
	}
	count, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "CAKE", OnHand: 1, ClampToReserved: true, IdempotencyKey: "count-low"})
	if err != nil || count.GetLevel().GetOnHand() != 6 || !strings.Contains(count.GetMovement().GetNote(), "5 units short") {
		t.Fatalf("a count of 1 with 6 reserved: %v, %v; want on hand 6, 5 units short", count, err)
	}
	// Without clamping, still refused.
	_, err = e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "CAKE", Delta: -1,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE, IdempotencyKey: "dropped"})
	requireStatus(t, err, codes.FailedPrecondition, "reserved")
	// Nothing on hand (a SKU never stocked here): nothing to take down, refused as before.
	_, err = e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "NEVER", Delta: -1, ClampToReserved: true,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "never"})
	requireStatus(t, err, codes.FailedPrecondition, "below 0")
	e.requireInvariants()
	e.requireLedgerMatches()
}

func TestLedgerRecordsWhoWhyAndTheLevelsAfter(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	ctx := metadata.AppendToOutgoingContext(e.ctx(), inventory.ActorMetadataKey, "staff:terminal-7")
	if _, err := e.admin.SetStock(ctx, &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "TEA", OnHand: 8, SafetyStock: 1, IdempotencyKey: "count-mon"}); err != nil {
		t.Fatal(err)
	}
	e.mustReserve(order("o1", "s1", "TEA", 3))
	e.commit("o1")
	for i := range 5 {
		if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "TEA", Delta: 1,
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_RETURN, IdempotencyKey: fmt.Sprintf("ret-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var all []*inventoryv1.StockMovement
	token := ""
	for {
		res, err := e.admin.ListMovements(e.ctx(), &inventoryv1.ListMovementsRequest{StoreId: "s1", Sku: "TEA", PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, res.GetMovements()...)
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(all) != 8 {
		t.Fatalf("%d movements, want 8 (set, hold placed, hold committed, 5 returns)", len(all))
	}
	newest, oldest := all[0], all[len(all)-1]
	if newest.GetKind() != inventoryv1.MovementKind_MOVEMENT_KIND_RETURN || newest.GetOnHandAfter() != 10 ||
		newest.GetActor().GetKind() != commonv1.ActorKind_ACTOR_KIND_ADMIN || newest.GetIdempotencyKey() != "ret-4" {
		t.Errorf("newest movement %v", newest)
	}
	if oldest.GetKind() != inventoryv1.MovementKind_MOVEMENT_KIND_SET || oldest.GetOnHandDelta() != 8 || oldest.GetSafetyStockAfter() != 1 ||
		oldest.GetActor().GetKind() != commonv1.ActorKind_ACTOR_KIND_STAFF || oldest.GetActor().GetId() != "terminal-7" {
		t.Errorf("oldest movement %v; want a SET by staff terminal-7", oldest)
	}
	placed, sold := all[6], all[5]
	if placed.GetKind() != inventoryv1.MovementKind_MOVEMENT_KIND_HOLD_PLACED || placed.GetReservedDelta() != 3 || placed.GetOrderId() != "o1" ||
		sold.GetKind() != inventoryv1.MovementKind_MOVEMENT_KIND_HOLD_COMMITTED || sold.GetOnHandDelta() != -3 || sold.GetReservedDelta() != -3 || sold.GetOnHandAfter() != 5 {
		t.Errorf("hold movements %v then %v", placed, sold)
	}
	if n := len(e.outboxEvents(inventory.SubjectStockChanged)); n != 8 {
		t.Errorf("%d stock.changed events, want one per change (8)", n)
	}
}

func TestListStockPagesBySKUAndAvailabilityAnswersUnknownSKUsWithZero(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	for i := range 7 {
		e.setStock("s1", fmt.Sprintf("SKU-%d", i), int32(10+i), 1)
	}
	var skus []string
	token := ""
	for {
		res, err := e.admin.ListStock(e.ctx(), &inventoryv1.ListStockRequest{StoreId: "s1", PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range res.GetLevels() {
			skus = append(skus, l.GetSku())
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if fmt.Sprint(skus) != "[SKU-0 SKU-1 SKU-2 SKU-3 SKU-4 SKU-5 SKU-6]" {
		t.Errorf("paged SKUs %v", skus)
	}
	var av inventoryv1.GetAvailabilityResponse
	if err := e.call(inventory.SubjectGetAvailability, &inventoryv1.GetAvailabilityRequest{StoreId: "s1", Skus: []string{"SKU-3", "NOPE", "SKU-0"}}, &av); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range av.GetAvailability() {
		got = append(got, fmt.Sprintf("%s=%d", a.GetSku(), a.GetAvailable()))
	}
	if fmt.Sprint(got) != "[SKU-3=12 NOPE=0 SKU-0=9]" {
		t.Errorf("availability %v, want [SKU-3=12 NOPE=0 SKU-0=9] in request order", got)
	}
	err := e.call(inventory.SubjectGetAvailability, &inventoryv1.GetAvailabilityRequest{StoreId: "nope", Skus: []string{"SKU-3"}}, &av)
	requireStatus(t, err, codes.NotFound, "store_id")
	_, err = e.admin.ListStock(e.ctx(), &inventoryv1.ListStockRequest{StoreId: "s1", PageToken: "garbage"})
	requireStatus(t, err, codes.InvalidArgument, "page_token")
}

// A count that keeps the safety stock sets on hand and leaves safety stock as it is when the
// count is applied, even when it changed after the count was made; retried with its key it
// changes nothing again. A safety stock given with it is refused, naming the field.
func TestACountCanKeepTheSafetyStock(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "TEA", 10, 3)
	count := &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "TEA", OnHand: 20, KeepSafetyStock: true, IdempotencyKey: "vendor-count-1"}
	for range 2 {
		res, err := e.admin.SetStock(e.ctx(), count)
		if err != nil {
			t.Fatal(err)
		}
		if l := res.GetLevel(); l.GetOnHand() != 20 || l.GetSafetyStock() != 3 {
			t.Fatalf("after the count: on hand %d, safety stock %d; want 20 and 3 kept", l.GetOnHand(), l.GetSafetyStock())
		}
	}
	// A SKU new to the store starts with none.
	res, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "NEW", OnHand: 4, KeepSafetyStock: true, IdempotencyKey: "vendor-count-2"})
	if err != nil || res.GetLevel().GetSafetyStock() != 0 || res.GetLevel().GetOnHand() != 4 {
		t.Fatalf("a new SKU's count: %v, %v; want on hand 4, no safety stock", res.GetLevel(), err)
	}
	_, err = e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "TEA", OnHand: 5, SafetyStock: 1, KeepSafetyStock: true, IdempotencyKey: "both"})
	requireStatus(t, err, codes.InvalidArgument, "safety_stock")
	e.requireInvariants()
	e.requireLedgerMatches()
}

// With tokens verified, as the stack runs inventory, an admin's own change is recorded as the
// admin's, whatever its x-handoff-actor says; only the pos-adapter's token minted for a caller
// it checked (auth.DelegateSubject) records that caller.
func TestAnAdminsChangeIsTheAdminsAndTheAdaptersIsTheCallersItActsFor(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	var key [32]byte
	_, _ = rand.Read(key[:])
	keys, err := auth.ParseKeySet("test:" + base64.StdEncoding.EncodeToString(key[:]))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcserver.New(testenv.Logger(t), keys)
	e.copies[0].RegisterGRPC(srv)
	admin := inventoryv1.NewInventoryAdminServiceClient(testenv.GRPC(t, srv.Server))
	for i, c := range []struct {
		subject, named string
		want           *commonv1.Actor
	}{
		{"mallory", "staff:alice", &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "mallory"}},
		{auth.DelegateSubject("vendor:acme-pos"), "staff:alice", &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_VENDOR, Id: "acme-pos"}},
	} {
		tok, err := keys.Issue(auth.Principal{Subject: c.subject, Role: auth.RoleAdmin}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ctx := metadata.AppendToOutgoingContext(auth.OutgoingContext(context.Background(), "Bearer "+tok), inventory.ActorMetadataKey, c.named)
		res, err := admin.SetStock(ctx, &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "LATTE", OnHand: int32(i + 1),
			IdempotencyKey: fmt.Sprintf("count-%d", i), Note: "count"})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.GetMovement().GetActor(); !proto.Equal(got, c.want) {
			t.Errorf("a change by %q naming %q in its metadata was recorded as %v; want %v", c.subject, c.named, got, c.want)
		}
	}
}
