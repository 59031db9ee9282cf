package inventory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/fieldmask"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/streams"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Event subjects inventory publishes (through the outbox).
var (
	// SubjectStockChanged carries StockLevelChanged: a store's level of one SKU changed.
	SubjectStockChanged = streams.EventSubject("inventory", "stock", "changed")
	// SubjectStoreCreated carries StoreChanged for a new store.
	SubjectStoreCreated = streams.EventSubject("inventory", "store", "created")
	// SubjectStoreUpdated carries StoreChanged after UpdateStore.
	SubjectStoreUpdated = streams.EventSubject("inventory", "store", "updated")
	// SubjectStoreStateChanged carries StoreStateChanged: opened, paused or closed.
	SubjectStoreStateChanged = streams.EventSubject("inventory", "store", "state_changed")
	// SubjectHoldReleased carries HoldReleased for a hold given back on request.
	SubjectHoldReleased = streams.EventSubject("inventory", "hold", "released")
	// SubjectHoldExpired carries HoldReleased for a hold the sweeper released at its deadline.
	SubjectHoldExpired = streams.EventSubject("inventory", "hold", "expired")
	// SubjectStoreEvents matches every store event (a subscription filter for store caches).
	SubjectStoreEvents = streams.EventSubject("inventory", "store", "*")
)

// StoreOfEvent reads which store a store event is about (StoreChanged or StoreStateChanged, by
// its subject). A subject of another kind gives "" and no error: a cache should take an event
// it cannot place as about any store.
func StoreOfEvent(subject string, data []byte) (string, error) {
	switch subject {
	case SubjectStoreCreated, SubjectStoreUpdated:
		var ev inventoryv1.StoreChanged
		err := proto.Unmarshal(data, &ev)
		return ev.GetStore().GetId(), err
	case SubjectStoreStateChanged:
		var ev inventoryv1.StoreStateChanged
		err := proto.Unmarshal(data, &ev)
		return ev.GetStoreId(), err
	}
	return "", nil
}

// Stored store states.
const (
	stateOpen   = "open"
	statePaused = "paused"
	stateClosed = "closed"
)

var stateNames = map[inventoryv1.StoreState]string{
	inventoryv1.StoreState_STORE_STATE_OPEN:   stateOpen,
	inventoryv1.StoreState_STORE_STATE_PAUSED: statePaused,
	inventoryv1.StoreState_STORE_STATE_CLOSED: stateClosed,
}

func stateProto(s string) inventoryv1.StoreState {
	for k, v := range stateNames {
		if v == s {
			return k
		}
	}
	return inventoryv1.StoreState_STORE_STATE_UNSPECIFIED
}

// Defaults for a store created without them.
const (
	defaultPrepTime     = 10 * time.Minute
	defaultPickupWindow = time.Hour
)

// addressJSON is stores.address.
type addressJSON struct {
	Line1       string `json:"line1,omitempty"`
	Line2       string `json:"line2,omitempty"`
	City        string `json:"city,omitempty"`
	Region      string `json:"region,omitempty"`
	PostalCode  string `json:"postal_code,omitempty"`
	CountryCode string `json:"country_code,omitempty"`
}

// storeRow is a stores row. Hours stay raw until someone needs them.
type storeRow struct {
	id, name               string
	address                []byte
	lat, lng               float64
	timeZone               string
	hoursRaw, excRaw       []byte
	prepSec, windowSec     int32
	state, stateReason     string
	version                int64
	createTime, updateTime time.Time
}

const storeColumns = `id, name, address, lat, lng, time_zone, opening_hours, hours_exceptions,
	prep_seconds, pickup_window_seconds, state, state_reason, version, create_time, update_time`

func scanStore(row pgx.Row) (*storeRow, error) {
	var r storeRow
	err := row.Scan(&r.id, &r.name, &r.address, &r.lat, &r.lng, &r.timeZone, &r.hoursRaw, &r.excRaw,
		&r.prepSec, &r.windowSec, &r.state, &r.stateReason, &r.version, &r.createTime, &r.updateTime)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *storeRow) decodeHours() ([]hoursJSON, []exceptionJSON, error) {
	weekly, err := decodeJSON[hoursJSON](r.hoursRaw, "opening_hours", r.id)
	if err != nil {
		return nil, nil, err
	}
	exceptions, err := decodeJSON[exceptionJSON](r.excRaw, "hours_exceptions", r.id)
	if err != nil {
		return nil, nil, err
	}
	return weekly, exceptions, nil
}

// proto returns the API form of the store; status is its open status (nil in events, where a
// time-dependent field would be stale when read).
func (r *storeRow) proto(status *inventoryv1.OpenStatus) (*inventoryv1.Store, error) {
	weekly, exceptions, err := r.decodeHours()
	if err != nil {
		return nil, err
	}
	return r.protoWith(weekly, exceptions, status)
}

// protoWith is proto with the hours already decoded.
func (r *storeRow) protoWith(weekly []hoursJSON, exceptions []exceptionJSON, status *inventoryv1.OpenStatus) (*inventoryv1.Store, error) {
	var a addressJSON
	if len(r.address) > 0 {
		if err := json.Unmarshal(r.address, &a); err != nil {
			return nil, fmt.Errorf("store %s address: %w", r.id, err)
		}
	}
	return &inventoryv1.Store{
		Id:   r.id,
		Name: r.name,
		Address: &inventoryv1.Address{Line1: a.Line1, Line2: a.Line2, City: a.City, Region: a.Region,
			PostalCode: a.PostalCode, CountryCode: a.CountryCode},
		Location:        &commonv1.LatLng{Latitude: r.lat, Longitude: r.lng},
		TimeZone:        r.timeZone,
		OpeningHours:    hoursToProto(weekly),
		HoursExceptions: exceptionsToProto(exceptions),
		PrepTime:        durationpb.New(time.Duration(r.prepSec) * time.Second),
		PickupWindow:    durationpb.New(time.Duration(r.windowSec) * time.Second),
		State:           stateProto(r.state),
		StateReason:     r.stateReason,
		OpenStatus:      status,
		Version:         r.version,
		CreateTime:      timestamp(r.createTime),
		UpdateTime:      timestamp(r.updateTime),
	}, nil
}

// storeProto is the store as shoppers and fulfilment see it: with its open status at now.
func (s *Service) storeProto(e *storeEntry, now time.Time) (*inventoryv1.Store, error) {
	st, err := s.storeStatus(e, now)
	if err != nil {
		return nil, err
	}
	return s.entryProto(e, e.openStatusProto(st, now))
}

// entryProto is a cached store's API form, from its shared parsed hours (no JSON decoding).
func (s *Service) entryProto(e *storeEntry, status *inventoryv1.OpenStatus) (*inventoryv1.Store, error) {
	weekly, exceptions, err := e.hours.decoded(&s.zones)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", e.row.id, err)
	}
	return e.row.protoWith(weekly, exceptions, status)
}

// storeWithStatus answers with a row just read or written, which also goes into the store
// cache (a newer cached version stays).
func (s *Service) storeWithStatus(r *storeRow, now time.Time) (*inventoryv1.Store, error) {
	return s.storeProto(s.stores.put(r)[0], now)
}

// GetStore returns one store with its open status now.
func (s *Service) GetStore(ctx context.Context, id string) (*inventoryv1.Store, error) {
	if id == "" {
		return nil, rpcerr.Invalid("store_id", "required")
	}
	r, err := scanStore(s.db.QueryRow(ctx, "SELECT "+storeColumns+" FROM stores WHERE id = $1", id))
	if err == pgx.ErrNoRows {
		return nil, rpcerr.NotFound("store_id", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get store: %w", err)
	}
	return s.storeWithStatus(r, time.Now())
}

// storePosition is the keyset position of ListStores pages.
type storePosition struct {
	ID string `json:"i"`
}

// ListStores pages through the stores by id, optionally only those in some states. The rows
// are read from the table, not the store cache: a listing that may lag by the cache's age
// would miss a store just created by another copy.
func (s *Service) ListStores(ctx context.Context, req *inventoryv1.ListStoresRequest) (*inventoryv1.ListStoresResponse, error) {
	var v rpcerr.Violations
	states := make([]string, 0, len(req.GetStates()))
	for i, st := range req.GetStates() {
		field := fmt.Sprintf("states[%d]", i)
		name, ok := stateNames[st]
		switch {
		case !ok:
			v.Addf(field, "must be STORE_STATE_OPEN, STORE_STATE_PAUSED or STORE_STATE_CLOSED, got %v", st)
		case slices.Contains(states, name):
			v.Addf(field, "%v is named twice", st)
		default:
			states = append(states, name)
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	size, err := pagetoken.PageSize(req.GetPageSize(), 100, 500)
	if err != nil {
		return nil, err
	}
	var after storePosition
	if _, err := pagetoken.Decode(req, &after); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, "SELECT "+storeColumns+` FROM stores
		WHERE id > $1 AND (cardinality($2::text[]) = 0 OR state = ANY($2))
		ORDER BY id LIMIT $3`, after.ID, states, size+1)
	if err != nil {
		return nil, fmt.Errorf("list stores: %w", err)
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*storeRow, error) { return scanStore(r) })
	if err != nil {
		return nil, fmt.Errorf("list stores: %w", err)
	}
	res := &inventoryv1.ListStoresResponse{}
	if len(found) > size {
		found = found[:size]
		res.NextPageToken = pagetoken.Encode(req, storePosition{ID: found[size-1].id})
	}
	now := time.Now()
	for _, e := range s.stores.put(found...) {
		st, err := s.storeProto(e, now)
		if err != nil {
			return nil, fmt.Errorf("list stores: %w", err)
		}
		res.Stores = append(res.Stores, st)
	}
	return res, nil
}

// CreateStore validates and adds a store, and publishes StoreChanged on store.created.
func (s *Service) CreateStore(ctx context.Context, in *inventoryv1.Store) (*inventoryv1.Store, error) {
	if in == nil {
		return nil, rpcerr.Invalid("store", "required")
	}
	w, err := storeForWrite(in, "store", true)
	if err != nil {
		return nil, err
	}
	var stored *storeRow
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		stored, err = scanStore(tx.QueryRow(ctx, `INSERT INTO stores (id, name, address, lat, lng, time_zone, opening_hours,
				hours_exceptions, prep_seconds, pickup_window_seconds, state, state_reason)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (id) DO NOTHING
			RETURNING `+storeColumns,
			w.id, w.name, w.address, w.lat, w.lng, w.timeZone, w.hours, w.exceptions, w.prepSec, w.windowSec, w.state, w.stateReason))
		if err == pgx.ErrNoRows {
			return rpcerr.AlreadyExists("store", w.id)
		}
		if err != nil {
			return fmt.Errorf("insert store: %w", err)
		}
		return enqueueStoreChanged(ctx, tx, SubjectStoreCreated, stored)
	})
	if err != nil {
		return nil, err
	}
	return s.storeWithStatus(stored, time.Now())
}

func enqueueStoreChanged(ctx context.Context, tx pgx.Tx, subject string, r *storeRow) error {
	p, err := r.proto(nil)
	if err != nil {
		return err
	}
	_, err = outbox.Enqueue(ctx, tx, subject, &inventoryv1.StoreChanged{Store: p})
	return err
}

// updatableStoreFields are UpdateStore's mask paths; an empty mask means all of them (state has
// SetStoreState).
var updatableStoreFields = []string{"name", "address", "location", "time_zone", "opening_hours", "hours_exceptions", "prep_time", "pickup_window"}

// UpdateStore changes the fields named in mask (all of them when empty), refusing a stale
// expected version, and publishes StoreChanged on store.updated. An update that changes
// nothing writes nothing, publishes nothing and is never refused.
func (s *Service) UpdateStore(ctx context.Context, in *inventoryv1.Store, mask []string, expectedVersion int64) (*inventoryv1.Store, error) {
	if in.GetId() == "" {
		return nil, rpcerr.Invalid("store.id", "required")
	}
	if expectedVersion < 0 {
		return nil, rpcerr.Invalid("expected_version", "must not be negative")
	}
	var stored *storeRow
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		cur, err := lockStore(ctx, tx, "store.id", in.GetId())
		if err != nil {
			return err
		}
		was, err := cur.proto(nil)
		if err != nil {
			return err
		}
		next := proto.CloneOf(was)
		if err := fieldmask.Apply(next, in, mask, updatableStoreFields); err != nil {
			return err
		}
		w, err := storeForWrite(next, "store", false)
		if err != nil {
			return err
		}
		// A change the store has already (a retry whose first answer was lost, with the version
		// it read before) is done: nothing to refuse, write or publish. Compared as stored, so
		// that hours given in another order, or a default left unset, are still the same.
		if as, err := storeForWrite(was, "store", false); err == nil && w.sameAs(as) {
			stored = cur
			return nil
		}
		if expectedVersion != 0 && cur.version != expectedVersion {
			return rpcerr.Aborted("store %q is at version %d, not expected_version %d: reload and retry", cur.id, cur.version, expectedVersion)
		}
		// Reserves that read the store before this change (its hours: a closing for today, say)
		// commit first, and none reads it after, as for SetStoreState.
		if _, err := tx.Exec(ctx, storeStateLockSQL, lockKeys([]string{cur.id})[0]); err != nil {
			return fmt.Errorf("wait for reserves at store %s: %w", cur.id, err)
		}
		stored, err = scanStore(tx.QueryRow(ctx, `UPDATE stores SET name = $2, address = $3, lat = $4, lng = $5, time_zone = $6,
				opening_hours = $7, hours_exceptions = $8, prep_seconds = $9, pickup_window_seconds = $10,
				version = version + 1, update_time = now()
			WHERE id = $1 RETURNING `+storeColumns,
			cur.id, w.name, w.address, w.lat, w.lng, w.timeZone, w.hours, w.exceptions, w.prepSec, w.windowSec))
		if err != nil {
			return fmt.Errorf("update store: %w", err)
		}
		return enqueueStoreChanged(ctx, tx, SubjectStoreUpdated, stored)
	})
	if err != nil {
		return nil, err
	}
	return s.storeWithStatus(stored, time.Now())
}

// StateChange is one SetStoreState request.
type StateChange struct {
	State  inventoryv1.StoreState
	Reason string
	// ExpectedVersion, when non-zero, refuses the change if the store is at another version.
	ExpectedVersion int64
	// CancelOpenOrders (closing only) asks fulfilment, through the event, to cancel the
	// store's open orders.
	CancelOpenOrders bool
	// Actor is who asked, named in the event (and so in the cancelled orders' histories).
	Actor *commonv1.Actor
}

// SetStoreState opens, pauses or closes a store and publishes StoreStateChanged, refusing a
// stale expected version (when non-zero). Setting the state and reason it already has changes
// nothing, publishes nothing and is never refused, unless it asks for the open orders to be
// cancelled: that is a new request even of a store closed already (the first closing may not
// have asked), so the expected version is checked, the version moves on and the event goes out
// again; fulfilment cancelling twice changes nothing the second time.
func (s *Service) SetStoreState(ctx context.Context, id string, c StateChange) (*inventoryv1.SetStoreStateResponse, error) {
	state, reason, expectedVersion := c.State, c.Reason, c.ExpectedVersion
	var v rpcerr.Violations
	if id == "" {
		v.Add("store_id", "required")
	}
	name, ok := stateNames[state]
	if !ok {
		v.Addf("state", "must be STORE_STATE_OPEN, STORE_STATE_PAUSED or STORE_STATE_CLOSED, got %v", state)
	}
	if c.CancelOpenOrders && ok && state != inventoryv1.StoreState_STORE_STATE_CLOSED {
		v.Addf("cancel_open_orders", "only with state STORE_STATE_CLOSED, not %v", state)
	}
	checkText(&v, "reason", reason, maxReasonLen, false)
	if expectedVersion < 0 {
		v.Addf("expected_version", "must not be negative, got %d", expectedVersion)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	var (
		stored  *storeRow
		holding int32
	)
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		cur, err := lockStore(ctx, tx, "store_id", id)
		if err != nil {
			return err
		}
		// Reserves that may have read the store's state before this change commit first
		// (storeLocksSQL), so that the count below includes their orders, and none reads the
		// old state after it.
		if _, err := tx.Exec(ctx, storeStateLockSQL, lockKeys([]string{id})[0]); err != nil {
			return fmt.Errorf("wait for reserves at store %s: %w", id, err)
		}
		// The orders the change leaves holding stock, for the caller to deal with (or those
		// fulfilment is about to cancel, when asked to), counted before the commit: a count
		// that fails then leaves the change undone, so the caller's retry, with the
		// expected_version it read, is not refused as stale by its own first try.
		if holding, err = ordersHoldingStock(ctx, tx, id); err != nil {
			return err
		}
		// Already so (a retry whose first answer was lost, say): done, whatever the version.
		already := cur.state == name && cur.stateReason == reason
		if already && !c.CancelOpenOrders {
			stored = cur
			return nil
		}
		// A cancelling request is never a no-op, so a stale version refuses it even when the
		// state and reason are the same.
		if (!already || c.CancelOpenOrders) && expectedVersion != 0 && cur.version != expectedVersion {
			return rpcerr.Aborted("store %q is at version %d, not expected_version %d: reload and retry", cur.id, cur.version, expectedVersion)
		}
		stored, err = scanStore(tx.QueryRow(ctx, `UPDATE stores SET state = $2, state_reason = $3, version = version + 1, update_time = now()
			WHERE id = $1 RETURNING `+storeColumns, id, name, reason))
		if err != nil {
			return fmt.Errorf("set store state: %w", err)
		}
		_, err = outbox.Enqueue(ctx, tx, SubjectStoreStateChanged, &inventoryv1.StoreStateChanged{
			StoreId: id, PreviousState: stateProto(cur.state), State: state, Reason: reason,
			CancelOpenOrders: c.CancelOpenOrders, Version: stored.version, Actor: c.Actor,
			ChangeTime: timestamppb.New(stored.updateTime),
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	st, err := s.storeWithStatus(stored, time.Now())
	if err != nil {
		return nil, err
	}
	return &inventoryv1.SetStoreStateResponse{Store: st, OrdersHoldingStock: holding}, nil
}

// storeStateLockSQL takes a store's reserve lock exclusively (see storeLocksSQL).
const storeStateLockSQL = `SELECT pg_advisory_xact_lock(hashtext('handoff.inventory.store'), $1::int4)`

// ordersHoldingStock counts the orders with open holds at store id (holds_open_by_stock).
func ordersHoldingStock(ctx context.Context, tx pgx.Tx, id string) (int32, error) {
	var n int32
	if err := tx.QueryRow(ctx, `SELECT count(DISTINCT order_id) FROM holds WHERE store_id = $1 AND state = 'open'`, id).Scan(&n); err != nil {
		return 0, fmt.Errorf("count orders holding stock at store %s: %w", id, err)
	}
	return n, nil
}

// lockStore reads store id for update; field names it in the request, for a NotFound.
func lockStore(ctx context.Context, tx pgx.Tx, field, id string) (*storeRow, error) {
	r, err := scanStore(tx.QueryRow(ctx, "SELECT "+storeColumns+" FROM stores WHERE id = $1 FOR UPDATE", id))
	if err == pgx.ErrNoRows {
		return nil, rpcerr.NotFound(field, id)
	}
	if err != nil {
		return nil, fmt.Errorf("load store: %w", err)
	}
	return r, nil
}

// newStoreID makes a server-assigned store id.
func newStoreID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "store-" + hex.EncodeToString(b)
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
