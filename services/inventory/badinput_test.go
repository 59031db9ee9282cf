package inventory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

func TestBadInputIsRefusedNamingTheFieldAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("existing", "s1", "LATTE", 2))

	reserveWith := func(mut func(*inventoryv1.ReserveHoldsRequest)) func() error {
		return func() error {
			req := order("o-bad", "s1", "LATTE", 1)
			mut(req)
			var res inventoryv1.ReserveHoldsResponse
			return e.call(inventory.SubjectReserveHolds, req, &res)
		}
	}
	storeWith := func(mut func(*inventoryv1.Store)) func() error {
		return func() error {
			st := storeAt("s-new", 47.6, -122.3)
			mut(st)
			_, err := e.admin.CreateStore(context.Background(), &inventoryv1.CreateStoreRequest{Store: st})
			return err
		}
	}
	adjust := func(req *inventoryv1.AdjustStockRequest) func() error {
		return func() error { _, err := e.admin.AdjustStock(context.Background(), req); return err }
	}
	tests := []struct {
		name  string
		do    func() error
		code  codes.Code
		field string
	}{
		{"reserve at an unknown store", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.StoreId = "no-such-store" }), codes.NotFound, "store_id"},
		{"reserve a negative quantity", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.Lines[0].Quantity = -1 }), codes.InvalidArgument, "lines[0].quantity"},
		{"reserve a zero quantity", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.Lines[0].Quantity = 0 }), codes.InvalidArgument, "lines[0].quantity"},
		{"reserve 1000 of a line", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.Lines[0].Quantity = 1000 }), codes.InvalidArgument, "lines[0].quantity"},
		{"reserve no lines", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.Lines = nil }), codes.InvalidArgument, "lines"},
		{"reserve without an order id", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.OrderId = "" }), codes.InvalidArgument, "order_id"},
		{"reserve a lowercase SKU", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.Lines[0].Sku = "latte" }), codes.InvalidArgument, "lines[0].sku"},
		{"reserve one line twice", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) {
			r.Lines = append(r.Lines, &inventoryv1.HoldLine{LineId: "l1", Sku: "LATTE", Quantity: 1})
		}), codes.InvalidArgument, "lines[1].line_id"},
		{"reserve with a past deadline", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) { r.ExpireTime = timestamppb.New(time.Now().Add(-time.Second)) }), codes.InvalidArgument, "expire_time"},
		{"reserve near latitude 91", reserveWith(func(r *inventoryv1.ReserveHoldsRequest) {
			r.StoreId, r.Near = "", &commonv1.LatLng{Latitude: 91}
		}), codes.InvalidArgument, "near.latitude"},
		{"create a store at latitude 91", storeWith(func(s *inventoryv1.Store) { s.Location.Latitude = 91 }), codes.InvalidArgument, "store.location.latitude"},
		{"create a store at longitude -181", storeWith(func(s *inventoryv1.Store) { s.Location.Longitude = -181 }), codes.InvalidArgument, "store.location.longitude"},
		{"create a store in an unknown time zone", storeWith(func(s *inventoryv1.Store) { s.TimeZone = "Mars/Olympus_Mons" }), codes.InvalidArgument, "store.time_zone"},
		{"create a store in the server's zone", storeWith(func(s *inventoryv1.Store) { s.TimeZone = "Local" }), codes.InvalidArgument, "store.time_zone"},
		{"create a store in the host's zone by its file name", storeWith(func(s *inventoryv1.Store) { s.TimeZone = "localtime" }), codes.InvalidArgument, "store.time_zone"},
		{"create a store in the zoneinfo's default rules", storeWith(func(s *inventoryv1.Store) { s.TimeZone = "posixrules" }), codes.InvalidArgument, "store.time_zone"},
		{"create a store in a zoneinfo copy", storeWith(func(s *inventoryv1.Store) { s.TimeZone = "right/America/New_York" }), codes.InvalidArgument, "store.time_zone"},
		{"create a store closing before it opens", storeWith(func(s *inventoryv1.Store) {
			s.OpeningHours[0].CloseTime = "05:00"
			s.OpeningHours[0].OpenTime = "06:00"
		}), codes.InvalidArgument, "store.opening_hours[0].close_time"},
		{"create a store with an impossible holiday", storeWith(func(s *inventoryv1.Store) {
			s.HoursExceptions = []*inventoryv1.HoursException{{Date: "2026-02-30", Closed: true}}
		}), codes.InvalidArgument, "store.hours_exceptions[0].date"},
		{"create a store with a bad id", storeWith(func(s *inventoryv1.Store) { s.Id = "Bad Id" }), codes.InvalidArgument, "store.id"},
		{"create a store without a country", storeWith(func(s *inventoryv1.Store) { s.Address.CountryCode = "" }), codes.InvalidArgument, "store.address.country_code"},
		{"find stores at latitude 91", func() error {
			_, err := e.locator.FindStores(context.Background(), &inventoryv1.FindStoresRequest{Location: &commonv1.LatLng{Latitude: 91}})
			return err
		}, codes.InvalidArgument, "location.latitude"},
		{"find stores beyond 100 km", func() error {
			_, err := e.locator.FindStores(context.Background(), &inventoryv1.FindStoresRequest{Location: centre, RadiusMeters: 200_000})
			return err
		}, codes.InvalidArgument, "radius_meters"},
		{"adjust stock at an unknown store", adjust(&inventoryv1.AdjustStockRequest{StoreId: "no-such-store", Sku: "LATTE", Delta: 1,
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY, IdempotencyKey: "k1"}), codes.NotFound, "store_id"},
		{"adjust stock without a key", adjust(&inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "LATTE", Delta: 1,
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY}), codes.InvalidArgument, "idempotency_key"},
		{"adjust stock without a reason", adjust(&inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "LATTE", Delta: 1, IdempotencyKey: "k2"}), codes.InvalidArgument, "reason"},
		{"adjust stock by zero", adjust(&inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "LATTE",
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT, IdempotencyKey: "k3"}), codes.InvalidArgument, "delta"},
		{"adjust stock below zero", adjust(&inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "LATTE", Delta: -11,
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT, IdempotencyKey: "k4"}), codes.FailedPrecondition, "delta"},
		{"adjust stock as of an impossible time", adjust(&inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "LATTE", Delta: -1,
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "k6",
			OccurTime: &timestamppb.Timestamp{Seconds: 1, Nanos: 2_000_000_000}}), codes.InvalidArgument, "occur_time"},
		{"adjust stock as of next week", adjust(&inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "LATTE", Delta: -1,
			Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "k7",
			OccurTime: timestamppb.New(time.Now().Add(7 * 24 * time.Hour))}), codes.InvalidArgument, "occur_time"},
		{"count stock taken two days ago", func() error {
			_, err := e.admin.SetStock(context.Background(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "LATTE", OnHand: 3, IdempotencyKey: "k8",
				OccurTime: timestamppb.New(time.Now().Add(-48 * time.Hour))})
			return err
		}, codes.InvalidArgument, "occur_time"},
		{"set a negative stock", func() error {
			_, err := e.admin.SetStock(context.Background(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "LATTE", OnHand: -1, IdempotencyKey: "k5"})
			return err
		}, codes.InvalidArgument, "on_hand"},
		{"get an unknown store", func() error {
			_, err := e.locator.GetStore(context.Background(), &inventoryv1.GetStoreRequest{StoreId: "no-such-store"})
			return err
		}, codes.NotFound, "store_id"},
		{"release without an order id", func() error {
			var res inventoryv1.ReleaseHoldsResponse
			return e.call(inventory.SubjectReleaseHolds, &inventoryv1.ReleaseHoldsRequest{}, &res)
		}, codes.InvalidArgument, "order_id"},
		{"commit a blank order id", func() error {
			var res inventoryv1.CommitHoldsResponse
			return e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: "   "}, &res)
		}, codes.InvalidArgument, "order_id"},
		{"commit an order id of 129 characters", func() error {
			var res inventoryv1.CommitHoldsResponse
			return e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: strings.Repeat("x", 129)}, &res)
		}, codes.InvalidArgument, "order_id"},
	}
	before := e.snapshot()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireStatus(t, tc.do(), tc.code, tc.field)
		})
	}
	if after := e.snapshot(); after != before {
		t.Errorf("refused requests changed the data:\nbefore %s\nafter  %s", before, after)
	}
	e.requireInvariants()
}

// snapshot summarises everything a refused request could have changed.
func (e *env) snapshot() string {
	e.t.Helper()
	var s string
	err := e.pool.QueryRow(e.ctx(), `SELECT format('stores %s/%s stock %s/%s/%s holds %s movements %s outbox %s',
		(SELECT count(*) FROM stores), (SELECT max(version) FROM stores),
		(SELECT count(*) FROM stock), (SELECT sum(on_hand) FROM stock), (SELECT sum(reserved) FROM stock),
		(SELECT count(*) FROM holds), (SELECT count(*) FROM movements), (SELECT count(*) FROM outbox))`).Scan(&s)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}
