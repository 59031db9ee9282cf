package inventory_test

// DESIGN.md invariant 7 (bad input gets a clear error naming the field, and changes nothing),
// every field of every RPC of StoreLocatorService and InventoryAdminService.

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

func TestEveryInventoryRPCRefusesBadInputNamingTheField(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("existing", "s1", "LATTE", 2))
	ctx := context.Background()
	long := strings.Repeat("x", 100_000)

	create := func(mut func(*inventoryv1.Store)) func() error {
		return func() error {
			st := storeAt("s-new", 47.6, -122.3)
			mut(st)
			_, err := e.admin.CreateStore(ctx, &inventoryv1.CreateStoreRequest{Store: st})
			return err
		}
	}
	update := func(mask []string, ev int64, mut func(*inventoryv1.Store)) func() error {
		return func() error {
			st := storeAt("s1", 47.61, -122.33)
			mut(st)
			r := &inventoryv1.UpdateStoreRequest{Store: st, ExpectedVersion: ev}
			if mask != nil {
				r.UpdateMask = &fieldmaskpb.FieldMask{Paths: mask}
			}
			_, err := e.admin.UpdateStore(ctx, r)
			return err
		}
	}
	setState := func(r *inventoryv1.SetStoreStateRequest) func() error {
		return func() error { _, err := e.admin.SetStoreState(ctx, r); return err }
	}
	setStock := func(mut func(*inventoryv1.SetStockRequest)) func() error {
		return func() error {
			r := &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "LATTE", OnHand: 5, IdempotencyKey: "audit-set"}
			mut(r)
			_, err := e.admin.SetStock(ctx, r)
			return err
		}
	}
	adjust := func(mut func(*inventoryv1.AdjustStockRequest)) func() error {
		return func() error {
			r := &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "LATTE", Delta: 1, Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY, IdempotencyKey: "audit-adj"}
			mut(r)
			_, err := e.admin.AdjustStock(ctx, r)
			return err
		}
	}
	find := func(r *inventoryv1.FindStoresRequest) func() error {
		return func() error { _, err := e.locator.FindStores(ctx, r); return err }
	}
	listStores := func(r *inventoryv1.ListStoresRequest) func() error {
		return func() error { _, err := e.admin.ListStores(ctx, r); return err }
	}
	here := &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}
	mvTok, err := e.admin.ListMovements(ctx, &inventoryv1.ListMovementsRequest{StoreId: "s1", PageSize: 1})
	if err != nil || mvTok.GetNextPageToken() == "" {
		t.Fatalf("ListMovements: %v %v", mvTok, err)
	}

	tests := []testenv.Refusal{
		// CreateStore
		{Name: "CreateStore nil store", Do: func() error { _, err := e.admin.CreateStore(ctx, &inventoryv1.CreateStoreRequest{}); return err }, Code: codes.InvalidArgument, Field: "store"},
		{Name: "CreateStore blank name", Do: create(func(s *inventoryv1.Store) { s.Name = " \t " }), Code: codes.InvalidArgument, Field: "store.name"},
		{Name: "CreateStore long name", Do: create(func(s *inventoryv1.Store) { s.Name = long }), Code: codes.InvalidArgument, Field: "store.name"},
		{Name: "CreateStore NaN latitude", Do: create(func(s *inventoryv1.Store) { s.Location.Latitude = math.NaN() }), Code: codes.InvalidArgument, Field: "store.location.latitude"},
		{Name: "CreateStore +Inf longitude", Do: create(func(s *inventoryv1.Store) { s.Location.Longitude = math.Inf(1) }), Code: codes.InvalidArgument, Field: "store.location.longitude"},
		{Name: "CreateStore no location", Do: create(func(s *inventoryv1.Store) { s.Location = nil }), Code: codes.InvalidArgument, Field: "store.location"},
		{Name: "CreateStore no address", Do: create(func(s *inventoryv1.Store) { s.Address = nil }), Code: codes.InvalidArgument, Field: "store.address"},
		{Name: "CreateStore long postal code", Do: create(func(s *inventoryv1.Store) { s.Address.PostalCode = strings.Repeat("9", 21) }), Code: codes.InvalidArgument, Field: "store.address.postal_code"},
		{Name: "CreateStore lowercase country", Do: create(func(s *inventoryv1.Store) { s.Address.CountryCode = "us" }), Code: codes.InvalidArgument, Field: "store.address.country_code"},
		{Name: "CreateStore empty zone", Do: create(func(s *inventoryv1.Store) { s.TimeZone = "" }), Code: codes.InvalidArgument, Field: "store.time_zone"},
		{Name: "CreateStore zone path traversal", Do: create(func(s *inventoryv1.Store) { s.TimeZone = "../../../etc/passwd" }), Code: codes.InvalidArgument, Field: "store.time_zone"},
		{Name: "CreateStore zone 100k", Do: create(func(s *inventoryv1.Store) { s.TimeZone = long }), Code: codes.InvalidArgument, Field: "store.time_zone"},
		{Name: "CreateStore UTC offset zone", Do: create(func(s *inventoryv1.Store) { s.TimeZone = "+01:00" }), Code: codes.InvalidArgument, Field: "store.time_zone"},
		{Name: "CreateStore weekday 99", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].Weekday = 99 }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].weekday"},
		{Name: "CreateStore weekday -1", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].Weekday = -1 }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].weekday"},
		{Name: "CreateStore weekday unspecified", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].Weekday = 0 }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].weekday"},
		{Name: "CreateStore open 25:00", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].OpenTime = "25:00" }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].open_time"},
		{Name: "CreateStore open 7:00", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].OpenTime = "7:00" }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].open_time"},
		{Name: "CreateStore close 24:01", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].CloseTime = "24:01" }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].close_time"},
		{Name: "CreateStore close empty", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].CloseTime = "" }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].close_time"},
		{Name: "CreateStore open -01:00", Do: create(func(s *inventoryv1.Store) { s.OpeningHours[0].OpenTime = "-1:00" }), Code: codes.InvalidArgument, Field: "store.opening_hours[0].open_time"},
		{Name: "CreateStore duplicate day", Do: create(func(s *inventoryv1.Store) { s.OpeningHours = append(s.OpeningHours, s.OpeningHours[0]) }), Code: codes.InvalidArgument, Field: "store.opening_hours[7]"},
		{Name: "CreateStore 29 hours entries", Do: create(func(s *inventoryv1.Store) {
			for len(s.OpeningHours) < 29 {
				s.OpeningHours = append(s.OpeningHours, &inventoryv1.OpeningHours{Weekday: 1, OpenTime: "00:00", CloseTime: "00:01"})
			}
		}), Code: codes.InvalidArgument, Field: "store.opening_hours"},
		{Name: "CreateStore exception date 99999-01-01", Do: create(func(s *inventoryv1.Store) {
			s.HoursExceptions = []*inventoryv1.HoursException{{Date: "99999-01-01", Closed: true}}
		}), Code: codes.InvalidArgument, Field: "store.hours_exceptions[0].date"},
		{Name: "CreateStore duplicate exception", Do: create(func(s *inventoryv1.Store) {
			s.HoursExceptions = []*inventoryv1.HoursException{{Date: "2030-01-01", Closed: true}, {Date: "2030-01-01", Closed: true}}
		}), Code: codes.InvalidArgument, Field: "store.hours_exceptions[1].date"},
		{Name: "CreateStore closed exception with hours", Do: create(func(s *inventoryv1.Store) {
			s.HoursExceptions = []*inventoryv1.HoursException{{Date: "2030-01-01", Closed: true, OpenTime: "09:00"}}
		}), Code: codes.InvalidArgument, Field: "store.hours_exceptions[0]"},
		{Name: "CreateStore open exception without hours", Do: create(func(s *inventoryv1.Store) {
			s.HoursExceptions = []*inventoryv1.HoursException{{Date: "2030-01-01"}}
		}), Code: codes.InvalidArgument, Field: "store.hours_exceptions[0].open_time"},
		{Name: "CreateStore exception reason long", Do: create(func(s *inventoryv1.Store) {
			s.HoursExceptions = []*inventoryv1.HoursException{{Date: "2030-01-01", Closed: true, Reason: long}}
		}), Code: codes.InvalidArgument, Field: "store.hours_exceptions[0].reason"},
		{Name: "CreateStore prep negative", Do: create(func(s *inventoryv1.Store) { s.PrepTime = durationpb.New(-time.Minute) }), Code: codes.InvalidArgument, Field: "store.prep_time"},
		{Name: "CreateStore prep 25h", Do: create(func(s *inventoryv1.Store) { s.PrepTime = durationpb.New(25 * time.Hour) }), Code: codes.InvalidArgument, Field: "store.prep_time"},
		{Name: "CreateStore prep invalid nanos", Do: create(func(s *inventoryv1.Store) { s.PrepTime = &durationpb.Duration{Seconds: 60, Nanos: -1} }), Code: codes.InvalidArgument, Field: "store.prep_time"},
		{Name: "CreateStore prep MaxInt64 s", Do: create(func(s *inventoryv1.Store) { s.PrepTime = &durationpb.Duration{Seconds: math.MaxInt64} }), Code: codes.InvalidArgument, Field: "store.prep_time"},
		{Name: "CreateStore prep 315576000000 s", Do: create(func(s *inventoryv1.Store) { s.PrepTime = &durationpb.Duration{Seconds: 315576000000} }), Code: codes.InvalidArgument, Field: "store.prep_time"},
		{Name: "CreateStore prep 1.5s", Do: create(func(s *inventoryv1.Store) { s.PrepTime = durationpb.New(1500 * time.Millisecond) }), Code: codes.InvalidArgument, Field: "store.prep_time"},
		{Name: "CreateStore window 0", Do: create(func(s *inventoryv1.Store) { s.PickupWindow = durationpb.New(0) }), Code: codes.InvalidArgument, Field: "store.pickup_window"},
		{Name: "CreateStore window 8 days", Do: create(func(s *inventoryv1.Store) { s.PickupWindow = durationpb.New(8 * 24 * time.Hour) }), Code: codes.InvalidArgument, Field: "store.pickup_window"},
		{Name: "CreateStore state 99", Do: create(func(s *inventoryv1.Store) { s.State = 99 }), Code: codes.InvalidArgument, Field: "store.state"},
		{Name: "CreateStore state -1", Do: create(func(s *inventoryv1.Store) { s.State = -1 }), Code: codes.InvalidArgument, Field: "store.state"},
		{Name: "CreateStore state_reason long", Do: create(func(s *inventoryv1.Store) { s.StateReason = long }), Code: codes.InvalidArgument, Field: "store.state_reason"},
		{Name: "CreateStore id too long", Do: create(func(s *inventoryv1.Store) { s.Id = strings.Repeat("a", 200) }), Code: codes.InvalidArgument, Field: "store.id"},
		{Name: "CreateStore id control char", Do: create(func(s *inventoryv1.Store) { s.Id = "s\x01" }), Code: codes.InvalidArgument, Field: "store.id"},
		{Name: "CreateStore existing id", Do: create(func(s *inventoryv1.Store) { s.Id = "s1" }), Code: codes.AlreadyExists, Field: "s1"},
		// UpdateStore
		{Name: "UpdateStore nil store", Do: func() error { _, err := e.admin.UpdateStore(ctx, &inventoryv1.UpdateStoreRequest{}); return err }, Code: codes.InvalidArgument, Field: "store.id"},
		{Name: "UpdateStore unknown store", Do: update(nil, 0, func(s *inventoryv1.Store) { s.Id = "nope" }), Code: codes.NotFound, Field: "store.id"},
		{Name: "UpdateStore mask id", Do: update([]string{"id"}, 0, func(s *inventoryv1.Store) { s.Id = "s1" }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateStore mask state", Do: update([]string{"state"}, 0, func(s *inventoryv1.Store) { s.State = inventoryv1.StoreState_STORE_STATE_CLOSED }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateStore mask version", Do: update([]string{"version"}, 0, func(s *inventoryv1.Store) { s.Version = 99 }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateStore mask nested", Do: update([]string{"address.city"}, 0, func(s *inventoryv1.Store) { s.Address.City = "Tacoma" }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateStore mask unknown", Do: update([]string{"name", "colour"}, 0, func(s *inventoryv1.Store) { s.Name = "New" }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateStore mask empty path", Do: update([]string{""}, 0, func(s *inventoryv1.Store) { s.Name = "New" }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateStore name cleared", Do: update([]string{"name"}, 0, func(s *inventoryv1.Store) { s.Name = "" }), Code: codes.InvalidArgument, Field: "store.name"},
		{Name: "UpdateStore location cleared", Do: update([]string{"location"}, 0, func(s *inventoryv1.Store) { s.Location = nil }), Code: codes.InvalidArgument, Field: "store.location"},
		{Name: "UpdateStore NaN lat", Do: update([]string{"location"}, 0, func(s *inventoryv1.Store) { s.Location.Latitude = math.NaN() }), Code: codes.InvalidArgument, Field: "store.location.latitude"},
		{Name: "UpdateStore expected_version -1", Do: update(nil, -1, func(s *inventoryv1.Store) { s.Name = "New" }), Code: codes.InvalidArgument, Field: "expected_version"},
		{Name: "UpdateStore stale expected_version", Do: update([]string{"name"}, 99, func(s *inventoryv1.Store) { s.Name = "New" }), Code: codes.Aborted, Field: "expected_version"},
		// SetStoreState
		{Name: "SetStoreState state 99", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "s1", State: 99}), Code: codes.InvalidArgument, Field: "state"},
		{Name: "SetStoreState state -3", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "s1", State: -3}), Code: codes.InvalidArgument, Field: "state"},
		{Name: "SetStoreState unspecified", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "s1"}), Code: codes.InvalidArgument, Field: "state"},
		{Name: "SetStoreState no store", Do: setState(&inventoryv1.SetStoreStateRequest{State: inventoryv1.StoreState_STORE_STATE_PAUSED}), Code: codes.InvalidArgument, Field: "store_id"},
		{Name: "SetStoreState unknown store", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "nope", State: inventoryv1.StoreState_STORE_STATE_PAUSED}), Code: codes.NotFound, Field: "store_id"},
		{Name: "SetStoreState 100k store id", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: long, State: inventoryv1.StoreState_STORE_STATE_PAUSED}), Code: 0, Field: "store_id"},
		{Name: "SetStoreState long reason", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: long}), Code: codes.InvalidArgument, Field: "reason"},
		{Name: "SetStoreState version -1", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, ExpectedVersion: -1}), Code: codes.InvalidArgument, Field: "expected_version"},
		{Name: "SetStoreState stale version", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, ExpectedVersion: 99}), Code: codes.Aborted, Field: "expected_version"},
		{Name: "SetStoreState cancel while pausing", Do: setState(&inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, CancelOpenOrders: true}), Code: codes.InvalidArgument, Field: "cancel_open_orders"},
		// SetStock
		{Name: "SetStock on_hand max int32", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.OnHand = math.MaxInt32 }), Code: codes.InvalidArgument, Field: "on_hand"},
		{Name: "SetStock safety negative", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.SafetyStock = -1 }), Code: codes.InvalidArgument, Field: "safety_stock"},
		{Name: "SetStock safety > on_hand", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.SafetyStock = math.MaxInt32 }), Code: codes.InvalidArgument, Field: "safety_stock"},
		{Name: "SetStock no sku", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.Sku = "" }), Code: codes.InvalidArgument, Field: "sku"},
		{Name: "SetStock sku 100k", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.Sku = long }), Code: codes.InvalidArgument, Field: "sku"},
		{Name: "SetStock sku with newline", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.Sku = "LATTE\n" }), Code: codes.InvalidArgument, Field: "sku"},
		{Name: "SetStock blank key", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.IdempotencyKey = "   " }), Code: codes.InvalidArgument, Field: "idempotency_key"},
		{Name: "SetStock key 129", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.IdempotencyKey = strings.Repeat("k", 129) }), Code: codes.InvalidArgument, Field: "idempotency_key"},
		{Name: "SetStock note 501", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.Note = strings.Repeat("n", 501) }), Code: codes.InvalidArgument, Field: "note"},
		{Name: "SetStock occur invalid nanos", Do: setStock(func(r *inventoryv1.SetStockRequest) {
			r.OccurTime = &timestamppb.Timestamp{Seconds: time.Now().Unix(), Nanos: -1}
		}), Code: codes.InvalidArgument, Field: "occur_time"},
		{Name: "SetStock occur year 10000", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.OccurTime = &timestamppb.Timestamp{Seconds: 253402300800} }), Code: codes.InvalidArgument, Field: "occur_time"},
		{Name: "SetStock occur far past", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.OccurTime = &timestamppb.Timestamp{Seconds: -62135596800} }), Code: codes.InvalidArgument, Field: "occur_time"},
		{Name: "SetStock occur before year 1", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.OccurTime = &timestamppb.Timestamp{Seconds: -62135596801} }), Code: codes.InvalidArgument, Field: "occur_time"},
		{Name: "SetStock unknown store", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.StoreId = "nope" }), Code: codes.NotFound, Field: "store_id"},
		{Name: "SetStock bad store id", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.StoreId = "No Such" }), Code: codes.InvalidArgument, Field: "store_id"},
		{Name: "SetStock keep safety with safety", Do: setStock(func(r *inventoryv1.SetStockRequest) { r.KeepSafetyStock, r.SafetyStock = true, 2 }), Code: codes.InvalidArgument, Field: "safety_stock"},
		// AdjustStock
		{Name: "AdjustStock reason 99", Do: adjust(func(r *inventoryv1.AdjustStockRequest) { r.Reason = 99 }), Code: codes.InvalidArgument, Field: "reason"},
		{Name: "AdjustStock reason -1", Do: adjust(func(r *inventoryv1.AdjustStockRequest) { r.Reason = -1 }), Code: codes.InvalidArgument, Field: "reason"},
		{Name: "AdjustStock delta MinInt32", Do: adjust(func(r *inventoryv1.AdjustStockRequest) {
			r.Delta, r.Reason = math.MinInt32, inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE
		}), Code: codes.InvalidArgument, Field: "delta"},
		{Name: "AdjustStock delta MaxInt32", Do: adjust(func(r *inventoryv1.AdjustStockRequest) { r.Delta = math.MaxInt32 }), Code: codes.InvalidArgument, Field: "delta"},
		{Name: "AdjustStock delivery negative", Do: adjust(func(r *inventoryv1.AdjustStockRequest) { r.Delta = -1 }), Code: codes.InvalidArgument, Field: "delta"},
		{Name: "AdjustStock sale positive", Do: adjust(func(r *inventoryv1.AdjustStockRequest) {
			r.Reason = inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE
		}), Code: codes.InvalidArgument, Field: "delta"},
		{Name: "AdjustStock note 100k", Do: adjust(func(r *inventoryv1.AdjustStockRequest) { r.Note = long }), Code: codes.InvalidArgument, Field: "note"},
		{Name: "AdjustStock delivery to 1e9+", Do: adjust(func(r *inventoryv1.AdjustStockRequest) { r.Delta = 1_000_000_000 }), Code: codes.FailedPrecondition, Field: "delta"},
		{Name: "AdjustStock occur invalid", Do: adjust(func(r *inventoryv1.AdjustStockRequest) { r.OccurTime = &timestamppb.Timestamp{Seconds: math.MaxInt64} }), Code: codes.InvalidArgument, Field: "occur_time"},
		// ListStores
		{Name: "ListStores state 99", Do: listStores(&inventoryv1.ListStoresRequest{States: []inventoryv1.StoreState{99}}), Code: codes.InvalidArgument, Field: "states[0]"},
		{Name: "ListStores state unspecified", Do: listStores(&inventoryv1.ListStoresRequest{States: []inventoryv1.StoreState{
			inventoryv1.StoreState_STORE_STATE_OPEN, inventoryv1.StoreState_STORE_STATE_UNSPECIFIED,
		}}), Code: codes.InvalidArgument, Field: "states[1]"},
		{Name: "ListStores state twice", Do: listStores(&inventoryv1.ListStoresRequest{States: []inventoryv1.StoreState{
			inventoryv1.StoreState_STORE_STATE_CLOSED, inventoryv1.StoreState_STORE_STATE_OPEN, inventoryv1.StoreState_STORE_STATE_CLOSED,
		}}), Code: codes.InvalidArgument, Field: "states[2]"},
		{Name: "ListStores page_size -1", Do: listStores(&inventoryv1.ListStoresRequest{PageSize: -1}), Code: codes.InvalidArgument, Field: "page_size"},
		{Name: "ListStores page_size MinInt32", Do: listStores(&inventoryv1.ListStoresRequest{PageSize: math.MinInt32}), Code: codes.InvalidArgument, Field: "page_size"},
		{Name: "ListStores garbage token", Do: listStores(&inventoryv1.ListStoresRequest{PageToken: "%%%"}), Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "ListStores token of ListMovements", Do: listStores(&inventoryv1.ListStoresRequest{PageToken: mvTok.GetNextPageToken()}), Code: codes.InvalidArgument, Field: "page_token"},
		// ListStock / ListMovements
		{Name: "ListStock no store", Do: func() error { _, err := e.admin.ListStock(ctx, &inventoryv1.ListStockRequest{}); return err }, Code: codes.InvalidArgument, Field: "store_id"},
		{Name: "ListStock unknown store", Do: func() error {
			_, err := e.admin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: "nope"})
			return err
		}, Code: codes.NotFound, Field: "store_id"},
		{Name: "ListStock bad sku", Do: func() error {
			_, err := e.admin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: "s1", Skus: []string{"LATTE", "bad sku"}})
			return err
		}, Code: codes.InvalidArgument, Field: "skus[1]"},
		{Name: "ListStock 201 skus", Do: func() error {
			skus := make([]string, 201)
			for i := range skus {
				skus[i] = "LATTE"
			}
			_, err := e.admin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: "s1", Skus: skus})
			return err
		}, Code: codes.InvalidArgument, Field: "skus"},
		{Name: "ListStock page_size -1", Do: func() error {
			_, err := e.admin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: "s1", PageSize: -1})
			return err
		}, Code: codes.InvalidArgument, Field: "page_size"},
		{Name: "ListStock garbage token", Do: func() error {
			_, err := e.admin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: "s1", PageToken: "%%%"})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "ListStock token of ListMovements", Do: func() error {
			_, err := e.admin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: "s1", PageToken: mvTok.GetNextPageToken()})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "ListMovements bad sku", Do: func() error {
			_, err := e.admin.ListMovements(ctx, &inventoryv1.ListMovementsRequest{StoreId: "s1", Sku: "x y"})
			return err
		}, Code: codes.InvalidArgument, Field: "sku"},
		{Name: "ListMovements page_size MinInt32", Do: func() error {
			_, err := e.admin.ListMovements(ctx, &inventoryv1.ListMovementsRequest{StoreId: "s1", PageSize: math.MinInt32})
			return err
		}, Code: codes.InvalidArgument, Field: "page_size"},
		{Name: "ListMovements token for another sku", Do: func() error {
			_, err := e.admin.ListMovements(ctx, &inventoryv1.ListMovementsRequest{StoreId: "s1", Sku: "LATTE", PageToken: mvTok.GetNextPageToken()})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "ListMovements unknown store", Do: func() error {
			_, err := e.admin.ListMovements(ctx, &inventoryv1.ListMovementsRequest{StoreId: "nope"})
			return err
		}, Code: codes.NotFound, Field: "store_id"},
		// CheckInvariants
		{Name: "CheckInvariants bad store id", Do: func() error {
			_, err := e.admin.CheckInvariants(ctx, &inventoryv1.CheckInvariantsRequest{StoreId: "Bad Id"})
			return err
		}, Code: codes.InvalidArgument, Field: "store_id"},
		{Name: "CheckInvariants unknown store", Do: func() error {
			_, err := e.admin.CheckInvariants(ctx, &inventoryv1.CheckInvariantsRequest{StoreId: "nope"})
			return err
		}, Code: codes.NotFound, Field: "store_id"},
		// FindStores
		{Name: "FindStores no location", Do: find(&inventoryv1.FindStoresRequest{}), Code: codes.InvalidArgument, Field: "location"},
		{Name: "FindStores NaN lat", Do: find(&inventoryv1.FindStoresRequest{Location: &commonv1.LatLng{Latitude: math.NaN()}}), Code: codes.InvalidArgument, Field: "location.latitude"},
		{Name: "FindStores -Inf lng", Do: find(&inventoryv1.FindStoresRequest{Location: &commonv1.LatLng{Longitude: math.Inf(-1)}}), Code: codes.InvalidArgument, Field: "location.longitude"},
		{Name: "FindStores NaN radius", Do: find(&inventoryv1.FindStoresRequest{Location: here, RadiusMeters: math.NaN()}), Code: codes.InvalidArgument, Field: "radius_meters"},
		{Name: "FindStores +Inf radius", Do: find(&inventoryv1.FindStoresRequest{Location: here, RadiusMeters: math.Inf(1)}), Code: codes.InvalidArgument, Field: "radius_meters"},
		{Name: "FindStores negative radius", Do: find(&inventoryv1.FindStoresRequest{Location: here, RadiusMeters: -1}), Code: codes.InvalidArgument, Field: "radius_meters"},
		{Name: "FindStores max_results -1", Do: find(&inventoryv1.FindStoresRequest{Location: here, MaxResults: -1}), Code: codes.InvalidArgument, Field: "max_results"},
		{Name: "FindStores max_results MaxInt32", Do: find(&inventoryv1.FindStoresRequest{Location: here, MaxResults: math.MaxInt32}), Code: codes.InvalidArgument, Field: "max_results"},
		{Name: "FindStores line qty 0", Do: find(&inventoryv1.FindStoresRequest{Location: here, Lines: []*inventoryv1.StockLine{{Sku: "LATTE"}}}), Code: codes.InvalidArgument, Field: "lines[0].quantity"},
		{Name: "FindStores line qty MinInt32", Do: find(&inventoryv1.FindStoresRequest{Location: here, Lines: []*inventoryv1.StockLine{{Sku: "LATTE", Quantity: math.MinInt32}}}), Code: codes.InvalidArgument, Field: "lines[0].quantity"},
		{Name: "FindStores line bad sku", Do: find(&inventoryv1.FindStoresRequest{Location: here, Lines: []*inventoryv1.StockLine{{Sku: "LATTE", Quantity: 1}, {Sku: "", Quantity: 1}}}), Code: codes.InvalidArgument, Field: "lines[1].sku"},
		{Name: "FindStores nil line", Do: find(&inventoryv1.FindStoresRequest{Location: here, Lines: []*inventoryv1.StockLine{nil}}), Code: codes.InvalidArgument, Field: "lines[0]"},
		{Name: "FindStores 101 lines", Do: find(&inventoryv1.FindStoresRequest{Location: here, Lines: func() []*inventoryv1.StockLine {
			var ls []*inventoryv1.StockLine
			for range 101 {
				ls = append(ls, &inventoryv1.StockLine{Sku: "LATTE", Quantity: 1})
			}
			return ls
		}()}), Code: codes.InvalidArgument, Field: "lines"},
		// GetStore / GetAvailability
		{Name: "GetStore empty", Do: func() error { _, err := e.locator.GetStore(ctx, &inventoryv1.GetStoreRequest{}); return err }, Code: codes.InvalidArgument, Field: "store_id"},
		{Name: "GetStore 100k id", Do: func() error {
			_, err := e.locator.GetStore(ctx, &inventoryv1.GetStoreRequest{StoreId: long})
			return err
		}, Code: 0, Field: "store_id"},
		{Name: "GetAvailability no skus", Do: func() error {
			_, err := e.locator.GetAvailability(ctx, &inventoryv1.GetAvailabilityRequest{StoreId: "s1"})
			return err
		}, Code: codes.InvalidArgument, Field: "skus"},
		{Name: "GetAvailability bad sku", Do: func() error {
			_, err := e.locator.GetAvailability(ctx, &inventoryv1.GetAvailabilityRequest{StoreId: "s1", Skus: []string{"ok", "LATTE"}})
			return err
		}, Code: codes.InvalidArgument, Field: "skus[0]"},
		{Name: "GetAvailability unknown store", Do: func() error {
			_, err := e.locator.GetAvailability(ctx, &inventoryv1.GetAvailabilityRequest{StoreId: "nope", Skus: []string{"LATTE"}})
			return err
		}, Code: codes.NotFound, Field: "store_id"},
	}
	before := e.snapshot()
	testenv.RefusedEach(t, tests)
	if after := e.snapshot(); after != before {
		t.Errorf("refused requests changed the data:\nbefore %s\nafter  %s", before, after)
	}
	e.requireInvariants()
}
