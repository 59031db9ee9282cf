package fulfilment

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// order is one order as fulfilment keeps it: a row of the orders table (history aside).
type order struct {
	ID             string
	CustomerID     string
	IdempotencyKey string
	CartID         string
	State          domain.State
	StoreID        string
	StoreName      string
	StoreTimeZone  string // IANA; "" before a store is assigned (and for orders from before the column)
	StoreVersion   int64  // the store version its holds were placed against (Hold.store_version); 0 before confirmation
	// RequestedPickup is the pickup its checkout asked for (requestedPickup); "" for orders from
	// before it was kept.
	RequestedPickup string
	Lines           []orderLine
	Currency        string
	CustomerNote    string
	PickupName      string
	Email           string
	Shortages       []shortage
	Reason          string
	ReadyBy         time.Time
	// AcceptTime is when staff accepted the order (zero before).
	AcceptTime   time.Time
	PickupWindow time.Duration
	Timers       domain.Timers
	// DriveAt is when the recovery loop next looks at a PENDING order.
	DriveAt           time.Time
	HoldDeadline      time.Time
	CheckInTime       time.Time
	CheckInBay        string
	CheckIns          int16 // the first check-in and each change of bay since (see maxCheckIns)
	WrongCodes        int
	PickupLockedUntil time.Time
	Placement         []byte
	Version           int64
	// Writes counts the writes of the row (orders.writes): updateOrder writes only over the
	// row it was read as.
	Writes     int64
	CreateTime time.Time
	UpdateTime time.Time

	// History is loaded only where the caller shows it.
	History []historyEntry
	// extendTo, when set, asks record to write an extend effect for the holds (see keepHolds).
	extendTo time.Time
}

// orderLine is one line of an order, stored as JSON in orders.lines.
type orderLine struct {
	ID          string `json:"id"`
	SKU         string `json:"sku"`
	Product     string `json:"product"`
	Variant     string `json:"variant"`
	Quantity    int32  `json:"qty"`
	UnitMinor   int64  `json:"unit"`
	Unavailable bool   `json:"unavailable,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// shortage is a line no store could fill, stored as JSON in orders.shortages.
type shortage struct {
	SKU       string `json:"sku"`
	Requested int32  `json:"requested"`
	Available int32  `json:"available"`
}

// historyEntry is one row of order_history.
type historyEntry struct {
	Seq    int64
	From   domain.State
	To     domain.State
	Event  string
	Actor  *commonv1.Actor
	Reason string
	LineID string
	Time   time.Time
}

// timerAt is when the timer or recovery loop must look at the order next (zero: never): a
// PENDING order when it is to be driven on; an open one at its next timer, or when its holds
// need refreshing (refreshMargin before their deadline: an order open longer than the
// deadline keepHolds gave it at confirmation), whichever comes first. A refresh that is due
// already is not scheduled again: keepHolds, called before this, extended the holds (so the
// refresh moved on) unless the order is READY and its holds outlive its pickup deadline.
func (o *order) timerAt(now time.Time, refreshMargin time.Duration) time.Time {
	if o.State == domain.Pending {
		return o.DriveAt
	}
	next := o.Timers.Next(o.State)
	if domain.Open(o.State) && !o.HoldDeadline.IsZero() {
		if refresh := o.HoldDeadline.Add(-refreshMargin); refresh.After(now) && (next.IsZero() || refresh.Before(next)) {
			next = refresh
		}
	}
	return next
}

func (o *order) total() int64 {
	var sum int64
	for _, l := range o.Lines {
		if !l.Unavailable {
			sum += l.UnitMinor * int64(l.Quantity)
		}
	}
	return sum
}

func (o *order) activeLines() int {
	n := 0
	for _, l := range o.Lines {
		if !l.Unavailable {
			n++
		}
	}
	return n
}

func (o *order) line(id string) *orderLine {
	for i := range o.Lines {
		if o.Lines[i].ID == id {
			return &o.Lines[i]
		}
	}
	return nil
}

// view says who an order is shown to, which decides whether the pickup code is in it.
type view int

const (
	// viewOwner: the order's own shopper; the pickup code is included while it can be used.
	viewOwner view = iota + 1
	// viewOthers: staff, events, notifications; never a pickup code.
	viewOthers
)

// proto renders the order; the pickup code is derived with secret for the owner's view.
func (o *order) proto(v view, secret []byte) *fulfilmentv1.Order {
	money := func(minor int64) *commonv1.Money {
		return &commonv1.Money{AmountMinor: minor, CurrencyCode: o.Currency}
	}
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	pb := &fulfilmentv1.Order{
		Id:             o.ID,
		CustomerId:     o.CustomerID,
		StoreId:        o.StoreID,
		StoreName:      o.StoreName,
		StoreTimeZone:  o.StoreTimeZone,
		State:          o.State,
		Total:          money(o.total()),
		ReadyByTime:    ts(o.ReadyBy),
		PickupDeadline: ts(o.Timers.PickupDeadline),
		CustomerNote:   o.CustomerNote,
		PickupName:     o.PickupName,
		Reason:         o.Reason,
		CartId:         o.CartID,
		Version:        o.Version,
		CreateTime:     ts(o.CreateTime),
		UpdateTime:     ts(o.UpdateTime),
	}
	for _, l := range o.Lines {
		state := fulfilmentv1.OrderLineState_ORDER_LINE_STATE_ACTIVE
		if l.Unavailable {
			state = fulfilmentv1.OrderLineState_ORDER_LINE_STATE_UNAVAILABLE
		}
		pb.Lines = append(pb.Lines, &fulfilmentv1.OrderLine{
			LineId:            l.ID,
			Sku:               l.SKU,
			ProductName:       l.Product,
			VariantName:       l.Variant,
			Quantity:          l.Quantity,
			UnitPrice:         money(l.UnitMinor),
			LineTotal:         money(l.UnitMinor * int64(l.Quantity)),
			State:             state,
			UnavailableReason: l.Reason,
		})
	}
	for _, s := range o.Shortages {
		pb.Shortages = append(pb.Shortages, &inventoryv1.Shortage{Sku: s.SKU, Requested: s.Requested, Available: s.Available})
	}
	if !o.CheckInTime.IsZero() {
		pb.CheckIn = &fulfilmentv1.CheckInInfo{Time: ts(o.CheckInTime), Bay: o.CheckInBay}
	}
	if v == viewOwner && domain.Open(o.State) {
		pb.PickupCode = domain.PickupCode(secret, o.ID)
	}
	for _, h := range o.History {
		pb.History = append(pb.History, h.proto())
	}
	return pb
}

func (h historyEntry) proto() *fulfilmentv1.Transition {
	return &fulfilmentv1.Transition{
		FromState: h.From,
		ToState:   h.To,
		Actor:     h.Actor,
		Reason:    h.Reason,
		Time:      timestamppb.New(h.Time),
		LineId:    h.LineID,
	}
}
