package fulfilment

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Inventory's request/reply subjects fulfilment calls.
var (
	subjectReserveHolds = natsrpc.Subject("inventory", "reserve_holds")
	subjectChangeHolds  = natsrpc.Subject("inventory", "change_holds")
	subjectGetStore     = natsrpc.Subject("inventory", "get_store")
)

// inventoryClient calls inventory over NATS. Every error is a gRPC status (natsrpc.Call).
type inventoryClient struct{ nc *nats.Conn }

func (c inventoryClient) reserve(ctx context.Context, req *inventoryv1.ReserveHoldsRequest) (*inventoryv1.ReserveHoldsResponse, error) {
	res := &inventoryv1.ReserveHoldsResponse{}
	if err := natsrpc.Call(ctx, c.nc, subjectReserveHolds, req, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (c inventoryClient) changeHolds(ctx context.Context, changes []*inventoryv1.HoldChange) (*inventoryv1.ChangeHoldsResponse, error) {
	res := &inventoryv1.ChangeHoldsResponse{}
	if err := natsrpc.Call(ctx, c.nc, subjectChangeHolds, &inventoryv1.ChangeHoldsRequest{Changes: changes}, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (c inventoryClient) getStore(ctx context.Context, storeID string) (*inventoryv1.Store, error) {
	res := &inventoryv1.GetStoreResponse{}
	if err := natsrpc.Call(ctx, c.nc, subjectGetStore, &inventoryv1.GetStoreRequest{StoreId: storeID}, res); err != nil {
		return nil, err
	}
	return res.GetStore(), nil
}

// uncertain reports an inventory error after which the call may or may not have taken
// effect: the order must be settled later (reserve is idempotent by order id, so asking again
// is safe). Refusals (invalid argument, unknown store or SKU) are certain: nothing happened.
func uncertain(err error) bool {
	switch rpcerr.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.OutOfRange,
		codes.PermissionDenied, codes.Unauthenticated, codes.AlreadyExists, codes.Unimplemented:
		return false
	}
	return true
}

// storeInfo is what an order needs of its store.
type storeInfo struct {
	name         string
	timeZone     string // IANA
	prepTime     time.Duration
	pickupWindow time.Duration
	// hours are the store's trading hours; nil when it has none or they cannot be read, and
	// then a pickup window runs in plain time.
	hours *hours.Schedule
}

// pickupTimes are the deadline of a pickup window opened at readyAt (pickupDeadline) and when
// to remind the shopper remindBefore it: when the window has that long left of the store's
// open time, so never while it is shut; zero, no reminder, for a window no longer than that.
func (i storeInfo) pickupTimes(readyAt time.Time, window, remindBefore time.Duration) (deadline, remind time.Time) {
	deadline = i.pickupDeadline(readyAt, window)
	if remindBefore <= 0 || window <= remindBefore {
		return deadline, time.Time{}
	}
	remind = i.pickupDeadline(readyAt, window-remindBefore)
	if i.hours == nil {
		return deadline, remind
	}
	if !remind.Before(deadline) {
		// The deadline was cut to maxPickupAhead, the reminder with it: the expiry would win
		// over it and it would never be sent. Remind the lead before the deadline instead,
		// when the store is open from then to the deadline (one shut all along has nothing to
		// remind of).
		if early := deadline.Add(-remindBefore); i.hours.OpenAt(early) && !i.hours.AddOpen(early, remindBefore).After(deadline) {
			remind = early
		} else {
			// Shut then, or before the deadline (the deadline is made-ready's clock time, seven
			// days on): the last lead of open time before the deadline, found over the window's
			// open time.
			lo, hi := time.Duration(0), window-remindBefore
			if !i.hours.AddOpen(readyAt, remindBefore).After(deadline) {
				for hi-lo > time.Minute {
					mid := lo + (hi-lo)/2
					if i.hours.AddOpen(readyAt, mid+remindBefore).After(deadline) {
						hi = mid
					} else {
						lo = mid
					}
				}
				if r := i.hours.AddOpen(readyAt, lo); r.Before(deadline) {
					remind = r
				}
			}
		}
	}
	// The lead left exactly at closing: the store is shut at that instant, and the window's
	// last lead of open time starts when it opens again.
	if st := i.hours.StatusAt(remind); !st.Open && !st.NextOpen.IsZero() && st.NextOpen.Before(deadline) {
		remind = st.NextOpen
	}
	return deadline, remind
}

// pickupDeadline is when a window opened at readyAt ends: after window of the store's open
// time, so that one opened just before closing does not run out overnight while the shopper
// cannot collect. It is at most maxPickupAhead away (a store shut for weeks lets it end). An
// order's estimate counts its preparation the same way (domain.ReadyBy).
func (i storeInfo) pickupDeadline(readyAt time.Time, window time.Duration) time.Time {
	if i.hours == nil {
		return readyAt.Add(window)
	}
	if d := i.hours.AddOpen(readyAt, window); d.Before(readyAt.Add(maxPickupAhead)) {
		return d
	}
	return readyAt.Add(maxPickupAhead)
}

// maxPickupAhead bounds a pickup deadline: inventory keeps a hold at most seven days ahead.
const maxPickupAhead = 7 * 24 * time.Hour

// storeInfoOf is what an order needs of store st (id storeID), with the fallbacks for what it
// leaves unset.
func storeInfoOf(storeID string, st *inventoryv1.Store) storeInfo {
	info := storeInfo{name: st.GetName(), timeZone: st.GetTimeZone(), prepTime: st.GetPrepTime().AsDuration(),
		pickupWindow: st.GetPickupWindow().AsDuration(), hours: hours.OfStore(st)}
	if info.name == "" {
		info.name = storeID
	}
	if info.prepTime <= 0 {
		info.prepTime = defaultPrepTime
	}
	if info.pickupWindow <= 0 {
		info.pickupWindow = defaultPickupWindow
	}
	return info
}

// Fallbacks for a store that leaves prep time or pickup window unset.
const (
	defaultPrepTime     = 10 * time.Minute
	defaultPickupWindow = time.Hour
)
