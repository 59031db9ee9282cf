package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/demo"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// LoadDemo fills an empty inventory with the demo chain's stores and every store × SKU stock
// level, in one transaction. Stores go through the validated path of the admin API (and
// publish store.created); the ~10,000 stock levels are copied in bulk with one SET ledger row
// each, so the ledger sums to the levels. Their stock.changed events are not published: at
// first start nobody holds a view to update, and GetAvailability answers from the table. An
// inventory with any store already is left alone.
func (s *Service) LoadDemo(ctx context.Context, chain demo.Chain) (loaded bool, err error) {
	// One transaction: a crash mid-load leaves an empty inventory, loaded again at the next
	// start. The advisory lock makes a second copy starting at once wait, then find it full.
	var stored []*storeRow
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		stored = stored[:0]
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.demo'))`); err != nil {
			return fmt.Errorf("lock demo load: %w", err)
		}
		var empty bool
		if err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM stores)`).Scan(&empty); err != nil {
			return fmt.Errorf("check inventory is empty: %w", err)
		}
		if !empty {
			return nil
		}
		for _, st := range chain.Stores {
			w, err := storeForWrite(demoStore(st), "demo store "+st.ID, true)
			if err != nil {
				return err
			}
			r, err := scanStore(tx.QueryRow(ctx, `INSERT INTO stores (id, name, address, lat, lng, time_zone, opening_hours,
					hours_exceptions, prep_seconds, pickup_window_seconds, state, state_reason)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING `+storeColumns,
				w.id, w.name, w.address, w.lat, w.lng, w.timeZone, w.hours, w.exceptions, w.prepSec, w.windowSec, w.state, w.stateReason))
			if err != nil {
				return fmt.Errorf("demo store %s: %w", st.ID, err)
			}
			if err := enqueueStoreChanged(ctx, tx, SubjectStoreCreated, r); err != nil {
				return err
			}
			stored = append(stored, r)
		}
		var levels []initialLevel
		for _, st := range chain.Stores {
			for _, v := range chain.SKUs() {
				l := chain.Stock(st.ID, v.SKU)
				levels = append(levels, initialLevel{StoreID: st.ID, SKU: v.SKU, OnHand: l.OnHand, SafetyStock: l.SafetyStock})
			}
		}
		if err := copyInitialStock(ctx, tx, levels, actorDemo); err != nil {
			return err
		}
		loaded = true
		return nil
	})
	if err != nil {
		return false, err
	}
	if loaded {
		s.stores.put(stored...)
		s.log.Info("demo inventory loaded", "stores", len(chain.Stores), "skus", len(chain.SKUs()))
	}
	return loaded, nil
}

// initialLevel is the first stock level of a store and SKU, for bulk loads.
type initialLevel struct {
	StoreID, SKU        string
	OnHand, SafetyStock int32
}

// copyInitialStock bulk-loads stock rows that do not exist yet (COPY), with one SET ledger row
// per non-zero level by actor, so the ledger sums to the levels. The stores must exist. It is
// for loading a new chain (the demo, benchmarks, migrations from another system); it publishes
// no events.
func copyInitialStock(ctx context.Context, tx pgx.Tx, levels []initialLevel, actor *commonv1.Actor) error {
	now := time.Now()
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"stock"}, []string{"store_id", "sku", "on_hand", "reserved", "safety_stock", "update_time", "version", "count_time"},
		pgx.CopyFromSlice(len(levels), func(i int) ([]any, error) {
			l := levels[i]
			// The loaded level is a count as of now: a till sale from before it is in it.
			return []any{l.StoreID, l.SKU, l.OnHand, int32(0), l.SafetyStock, now, initialVersion(l), now}, nil
		}))
	if err != nil {
		return fmt.Errorf("copy stock: %w", err)
	}
	if int(n) != len(levels) {
		return fmt.Errorf("copy stock: %d of %d rows", n, len(levels))
	}
	var moves [][]any
	for _, l := range levels {
		if l.OnHand == 0 && l.SafetyStock == 0 {
			continue // nothing happened: the ledger sums to 0 already
		}
		moves = append(moves, []any{l.StoreID, l.SKU, kindSet, l.OnHand, int32(0), l.OnHand, int32(0), l.SafetyStock,
			actorKinds[actor.GetKind()], actor.GetId(), "initial stock", now, initialVersion(l)})
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"movements"}, []string{"store_id", "sku", "kind", "on_hand_delta", "reserved_delta",
		"on_hand_after", "reserved_after", "safety_stock_after", "actor_kind", "actor_id", "note", "create_time", "stock_version"},
		pgx.CopyFromRows(moves)); err != nil {
		return fmt.Errorf("copy initial movements: %w", err)
	}
	return nil
}

// initialVersion is a loaded row's version: 1 for a level its SET movement made, 0 for an
// empty row, which has none.
func initialVersion(l initialLevel) int64 {
	if l.OnHand == 0 && l.SafetyStock == 0 {
		return 0
	}
	return 1
}

// demoStore is a demo store in the API's form, so it passes the same validation.
func demoStore(st demo.Store) *inventoryv1.Store {
	out := &inventoryv1.Store{
		Id:   st.ID,
		Name: st.Name,
		Address: &inventoryv1.Address{Line1: st.Address.Line1, City: st.Address.City, Region: st.Address.Region,
			PostalCode: st.Address.Postcode, CountryCode: st.Address.Country},
		Location:     &commonv1.LatLng{Latitude: st.Lat, Longitude: st.Lng},
		TimeZone:     st.TimeZone,
		PrepTime:     durationpb.New(st.PrepTime),
		PickupWindow: durationpb.New(st.PickupWindow),
		State:        inventoryv1.StoreState_STORE_STATE_OPEN,
	}
	for _, h := range st.Hours {
		iso := int(h.Weekday)
		if h.Weekday == time.Sunday {
			iso = 7
		}
		out.OpeningHours = append(out.OpeningHours, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(iso), OpenTime: h.Open, CloseTime: h.Close})
	}
	for _, e := range st.Exceptions {
		out.HoursExceptions = append(out.HoursExceptions, &inventoryv1.HoursException{Date: e.Date, Closed: e.Closed, OpenTime: e.Open, CloseTime: e.Close, Reason: e.Reason})
	}
	return out
}

// OwnData reports whether inventory has stores other than chain's.
func (s *Service) OwnData(ctx context.Context, chain demo.Chain) (bool, error) {
	var stores []string
	for _, st := range chain.Stores {
		stores = append(stores, st.ID)
	}
	var own bool
	if err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM stores WHERE id <> ALL($1))`, stores).Scan(&own); err != nil {
		return false, fmt.Errorf("look for data other than the demo's: %w", err)
	}
	return own, nil
}
