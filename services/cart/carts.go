package cart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/storeid"
	"github.com/handoff-dev/handoff/internal/utf8field"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Limits of a cart.
const (
	minQuantity = 1
	maxQuantity = 99
	// maxLines matches what fulfilment accepts in one order.
	maxLines = 100
	// maxRadiusMeters bounds "nearest store" searches.
	maxRadiusMeters = 100_000
)

const (
	stateOpen       = "open"
	stateCheckedOut = "checked_out"
)

// cartRow is a cart as stored.
type cartRow struct {
	ID, CustomerID, State string
	StoreID               *string
	NearLat, NearLng      *float64
	NearRadius            *float64
	Version               int64
	CheckoutKey           *string
	CheckingOut           bool // a checkout's lease is running
	Unsettled             bool // a checkout's lease lapsed without an answer: it may have an order
	OrderID               *string
	CreateTime            time.Time
	UpdateTime            time.Time
	Lines                 []lineRow // in the order they were added
}

// lineRow is a cart line as stored (an element of carts.lines), with the catalog's answer when
// it was last priced.
type lineRow struct {
	LineID      string `json:"line_id"`
	SKU         string `json:"sku"`
	Quantity    int32  `json:"quantity"`
	ProductID   string `json:"product_id"`
	ProductName string `json:"product_name"`
	VariantName string `json:"variant_name"`
	PriceMinor  int64  `json:"price_minor"`
	Currency    string `json:"currency"`
}

func (c *cartRow) line(lineID string) *lineRow {
	for i := range c.Lines {
		if c.Lines[i].LineID == lineID {
			return &c.Lines[i]
		}
	}
	return nil
}

func (c *cartRow) lineBySKU(sku string) *lineRow {
	for i := range c.Lines {
		if c.Lines[i].SKU == sku {
			return &c.Lines[i]
		}
	}
	return nil
}

func (c *cartRow) skus() []string {
	out := make([]string, len(c.Lines))
	for i, l := range c.Lines {
		out[i] = l.SKU
	}
	return out
}

func (c *cartRow) hasPickup() bool { return c.StoreID != nil || c.NearLat != nil }

// clone is a copy a change can edit without touching c.
func (c *cartRow) clone() *cartRow {
	out := *c
	out.Lines = slices.Clone(c.Lines)
	return &out
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// loadCart reads customer's cart id, lines included, in one statement; with forUpdate it also
// locks the row (q must then be a transaction). Another customer's cart is NotFound, exactly
// like a cart that does not exist.
func loadCart(ctx context.Context, q querier, customer, id string, forUpdate bool) (*cartRow, error) {
	sql := `SELECT ` + cartColumns + ` FROM carts WHERE id = $1 AND customer_id = $2`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	c := &cartRow{}
	err := q.QueryRow(ctx, sql, id, customer).Scan(c.scanTargets()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rpcerr.NotFound("cart", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read cart %s: %w", id, err)
	}
	return c, nil
}

// cartColumns are the carts columns a cartRow holds, in scanTargets' order.
const cartColumns = `id, customer_id, state, pickup_store_id, near_lat, near_lng, near_radius_m, version,
	checkout_key, coalesce(checkout_until > now(), false), coalesce(checkout_until <= now(), false), order_id,
	create_time, update_time, lines`

func (c *cartRow) scanTargets() []any {
	return []any{&c.ID, &c.CustomerID, &c.State, &c.StoreID, &c.NearLat, &c.NearLng,
		&c.NearRadius, &c.Version, &c.CheckoutKey, &c.CheckingOut, &c.Unsettled, &c.OrderID, &c.CreateTime, &c.UpdateTime, &c.Lines}
}

// writable refuses a change the cart's state or the caller's version does not allow.
func writable(c *cartRow, expectedVersion int64) error {
	switch {
	case c.State == stateCheckedOut:
		return rpcerr.FailedPrecondition("cart %q is checked out as order %q and can no longer change; start a new cart", c.ID, deref(c.OrderID))
	case expectedVersion < 0:
		return rpcerr.Invalid("expected_version", "must not be negative")
	case expectedVersion != 0 && expectedVersion != c.Version:
		return rpcerr.Aborted("cart %q is at version %d, not expected_version %d: it was changed elsewhere; reload it and try again", c.ID, c.Version, expectedVersion)
	case c.CheckingOut:
		return rpcerr.Aborted("cart %q is being checked out; reload it in a moment", c.ID)
	case c.Unsettled:
		return unsettledError{c}
	}
	return nil
}

// optimisticAttempts is how often mutate reads and conditionally writes a cart before it takes
// the row lock for one last, certain attempt. Losing a race takes a concurrent change of the
// same cart (a shopper's two devices); losing it this often takes a storm of them.
const optimisticAttempts = 4

// mutate applies change to customer's cart and stores it: read the row, check state and
// version, change a copy in Go, then one UPDATE that only matches the row as it was read (same
// version, still open, no checkout lease). A refused change writes nothing. When another writer
// got in between, the cart is read again: that read explains the refusal (stale
// expected_version, checked out, being checked out) or, when the cart may still take the change,
// it is applied again to the newer cart. After optimisticAttempts lost races the last attempt
// holds the row lock, so a change is never starved.
//
// The first attempt starts from the cart as this copy last wrote it, when it remembers it
// (rowCache), without reading the row. Should that attempt be refused or miss, the copy may
// be stale: it is forgotten and the change is decided again on the row as stored, so every
// refusal is one the stored cart gives.
func (s *Service) mutate(ctx context.Context, customer, cartID string, expectedVersion int64, change func(c *cartRow) error) (*cartRow, error) {
	var v rpcerr.Violations
	checkCartID(&v, cartID)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if c := s.rows.get(cartID, customer); c != nil {
		if out, err := s.tryMutate(ctx, s.db, customer, cartID, expectedVersion, c, change); out != nil && err == nil {
			s.rows.put(out.clone())
			return out, nil
		}
		s.rows.drop(cartID)
	}
	out, err := s.mutateStored(ctx, customer, cartID, expectedVersion, change)
	if u, ok := errors.AsType[unsettledError](err); ok {
		if err := s.settle(ctx, u.c); err != nil {
			return nil, err
		}
		out, err = s.mutateStored(ctx, customer, cartID, expectedVersion, change)
	}
	if _, ok := errors.AsType[unsettledError](err); ok {
		err = rpcerr.Aborted("cart %q is being checked out; reload it in a moment", cartID)
	}
	if out != nil && err == nil {
		s.rows.put(out.clone())
	}
	return out, err
}

// mutateStored is mutate's read-change-write loop on the row as stored.
func (s *Service) mutateStored(ctx context.Context, customer, cartID string, expectedVersion int64, change func(c *cartRow) error) (*cartRow, error) {
	for attempt := 1; attempt <= optimisticAttempts; attempt++ {
		out, err := s.tryMutate(ctx, s.db, customer, cartID, expectedVersion, nil, change)
		if out != nil || err != nil {
			return out, err
		}
		s.log.DebugContext(ctx, "cart changed under a write; trying again", "cart_id", cartID, "attempt", attempt)
	}
	var out *cartRow
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		c, err := loadCart(ctx, tx, customer, cartID, true)
		if err != nil {
			return err
		}
		out, err = s.tryMutate(ctx, tx, customer, cartID, expectedVersion, c, change)
		if out == nil && err == nil {
			// The row is locked and passed every check: only a lease lapsing between the
			// two statements can get here.
			err = rpcerr.Aborted("cart %q changed while this change was applied; reload it and try again", cartID)
		}
		return err
	})
	return out, err
}

// tryMutate is one read-change-write of mutate, starting from c (read from q when nil). It
// returns the stored cart, or an error that explains a refusal, or neither when another
// writer won the race. c itself is not changed.
func (s *Service) tryMutate(ctx context.Context, q querier, customer, cartID string, expectedVersion int64, c *cartRow, change func(c *cartRow) error) (*cartRow, error) {
	if c == nil {
		var err error
		if c, err = loadCart(ctx, q, customer, cartID, false); err != nil {
			return nil, err
		}
	}
	if err := writable(c, expectedVersion); err != nil {
		return nil, err
	}
	next := c.clone()
	if err := change(next); err != nil {
		return nil, err
	}
	lines := next.Lines
	if lines == nil {
		lines = []lineRow{} // the column holds an array, never null
	}
	linesJSON, err := json.Marshal(lines)
	if err != nil {
		return nil, fmt.Errorf("encode lines of cart %s: %w", cartID, err)
	}
	editID := uuid.Must(uuid.NewV7()).String()
	if _, inTx := q.(pgx.Tx); !inTx {
		// Together with the concurrent edits of other carts (see editwrites.go).
		done, err := s.edits.Do(ctx, editReq{cartID: cartID, customer: customer, editID: editID, version: c.Version, lines: string(linesJSON),
			storeID: next.StoreID, nearLat: next.NearLat, nearLng: next.NearLng, nearRadius: next.NearRadius})
		if err != nil || done == nil {
			// The write may have been stored all the same: its COMMIT's reply lost, or its
			// batch stored and then reported failed, whose run alone then missed. Its id in the
			// row says so; deciding it again would apply it twice.
			if stored, serr := storedEdit(ctx, q, customer, cartID, editID); serr == nil && stored != nil {
				return stored, nil
			}
			return nil, err // nil, nil: another writer won the race
		}
		next.Version, next.UpdateTime = done.version, done.updateTime
		return next, nil
	}
	err = q.QueryRow(ctx, editOneSQL,
		cartID, customer, c.Version, linesJSON, next.StoreID, next.NearLat, next.NearLng, next.NearRadius, editID, stateOpen,
	).Scan(&next.Version, &next.UpdateTime)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("write cart %s: %w", cartID, err)
	}
	return next, nil
}

// CreateCart starts a cart for customer, holding the lines and pickup choice of req if it has
// any: what AddLine and SetPickup would make of them, decided and stored at once. Anything
// refused refuses the whole request, before any cart is made.
func (s *Service) CreateCart(ctx context.Context, customer string, req *cartv1.CreateCartRequest) (*cartv1.Cart, error) {
	lines := req.GetLines()
	if len(lines) > maxLines {
		// Before anything walks them: a request may carry tens of thousands.
		return nil, rpcerr.Invalid("lines", fmt.Sprintf("a cart has at most %d lines, got %d", maxLines, len(lines)))
	}
	var v rpcerr.Violations
	for i, l := range lines {
		checkSKU(&v, fmt.Sprintf("lines[%d].sku", i), l.GetSku())
		if q := l.GetQuantity(); q < minQuantity || q > maxQuantity {
			v.Addf(fmt.Sprintf("lines[%d].quantity", i), "must be between %d and %d, got %d", minQuantity, maxQuantity, q)
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	c := &cartRow{}
	var pickup pickupChoice
	if req.GetPickup() != nil {
		var err error
		if pickup, err = s.choosePickup(ctx, req.GetPickup()); err != nil {
			return nil, err
		}
		pickup.apply(c)
	}
	var variants map[string]*catalogv1.Variant
	if len(lines) > 0 {
		skus := make([]string, 0, len(lines))
		for _, l := range lines {
			if !slices.Contains(skus, l.GetSku()) { // at most 100: a scan is cheaper than a map
				skus = append(skus, l.GetSku())
			}
		}
		var err error
		if variants, err = s.variants(ctx, skus); err != nil {
			return nil, lookupFailed("catalog", "lines", err)
		}
		for i, l := range lines {
			variant, ok := variants[l.GetSku()]
			if err := s.checkOrderable(l.GetSku(), variant, ok); err != nil {
				return nil, status.Errorf(status.Code(err), "lines[%d].sku: %s", i, status.Convert(err).Message())
			}
			if err := addUnits(c, fmt.Sprintf("lines[%d].quantity", i), variant, l.GetQuantity()); err != nil {
				return nil, err
			}
		}
	}
	if c.Lines == nil {
		c.Lines = []lineRow{} // the column holds an array, never null
	}
	linesJSON, err := json.Marshal(c.Lines)
	if err != nil {
		return nil, fmt.Errorf("encode lines of a new cart: %w", err)
	}
	created, err := s.creates.Do(ctx, createReq{id: uuid.Must(uuid.NewV7()).String(), customer: customer, lines: string(linesJSON),
		storeID: c.StoreID, nearLat: c.NearLat, nearLng: c.NearLng, nearRadius: c.NearRadius})
	if err != nil {
		return nil, err
	}
	s.rows.put(created.clone())
	return s.viewWith(ctx, created, learned{variants: variants, store: pickup.store}), nil
}

// GetCart returns customer's cart, repriced, with availability at the chosen store.
func (s *Service) GetCart(ctx context.Context, customer, cartID string) (*cartv1.Cart, error) {
	var v rpcerr.Violations
	checkCartID(&v, cartID)
	if err := v.Err(); err != nil {
		return nil, err
	}
	c, err := loadCart(ctx, s.db, customer, cartID, false)
	if err != nil {
		return nil, err
	}
	if c.Unsettled {
		// A checkout's lease lapsed without an answer: its order may exist. Shown as it is
		// stored, the cart would read open, with no order, for as long as nothing changes it;
		// settled first, it reads as what it is. While fulfilment cannot say, the cart is shown
		// as stored (a change of it is refused as Unavailable until then).
		if err := s.settle(ctx, c); err != nil {
			s.log.InfoContext(ctx, "cart shown unsettled: its lapsed checkout's outcome is not known yet", "cart_id", c.ID, "err", err)
		} else if c, err = loadCart(ctx, s.db, customer, cartID, false); err != nil {
			return nil, err
		}
	}
	return s.view(ctx, c), nil
}

// maxSKULen is the longest SKU the catalog gives a variant: a longer one names nothing, and is
// refused before it is looked up (a SKU of megabytes would not fit the catalog's request).
const maxSKULen = 64

func checkSKU(v *rpcerr.Violations, field, sku string) {
	switch {
	case sku == "":
		v.Add(field, "is required")
	case !utf8.ValidString(sku):
		v.Add(field, utf8field.Problem)
	case len(sku) > maxSKULen:
		v.Addf(field, "must be at most %d bytes, got %d", maxSKULen, len(sku))
	}
}

// checkCartID checks the request's cart_id. Invalid UTF-8 never comes over the wire (protobuf
// refuses it) but an in-process caller can pass it; like a NUL (refused by the server's check
// of every request, grpcserver) it would fail the cart's first statement as Internal (SQLSTATE
// 22021), or a whole batch shared with other requests.
func checkCartID(v *rpcerr.Violations, id string) {
	switch {
	case id == "":
		v.Add("cart_id", "is required")
	case !utf8.ValidString(id):
		v.Add("cart_id", utf8field.Problem)
	}
}

// checkLineID checks the request's line_id (see checkCartID).
func checkLineID(id string) error {
	switch {
	case id == "":
		return rpcerr.Invalid("line_id", "is required")
	case !utf8.ValidString(id):
		return rpcerr.Invalid("line_id", utf8field.Problem)
	}
	return nil
}

func checkQuantity(q int32) error {
	if q < minQuantity || q > maxQuantity {
		return rpcerr.Invalid("quantity", fmt.Sprintf("must be between %d and %d, got %d", minQuantity, maxQuantity, q))
	}
	return nil
}

// AddLine adds quantity of sku, or raises its existing line, after the catalog has confirmed
// the SKU can be ordered.
func (s *Service) AddLine(ctx context.Context, customer string, req *cartv1.AddLineRequest) (*cartv1.Cart, error) {
	var v rpcerr.Violations
	checkCartID(&v, req.GetCartId())
	checkSKU(&v, "sku", req.GetSku())
	if q := req.GetQuantity(); q < minQuantity || q > maxQuantity {
		v.Addf("quantity", "must be between %d and %d, got %d", minQuantity, maxQuantity, q)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	// Ask the catalog (or its cache) first: a refused SKU costs no cart read.
	variant, err := s.orderableVariant(ctx, req.GetSku())
	if err != nil {
		return nil, err
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(c *cartRow) error {
		return addUnits(c, "quantity", variant, req.GetQuantity())
	})
	if err != nil {
		return nil, err
	}
	return s.viewWith(ctx, c, learned{variants: map[string]*catalogv1.Variant{req.GetSku(): variant}}), nil
}

// addUnits adds quantity of variant to c: a new line, or more of the line that has its SKU,
// up to maxQuantity (field names the quantity when that is passed). Either way the line takes
// the variant's names and price.
func addUnits(c *cartRow, field string, variant *catalogv1.Variant, quantity int32) error {
	l := c.lineBySKU(variant.GetSku())
	if l == nil {
		if len(c.Lines) >= maxLines {
			return rpcerr.FailedPrecondition("cart %q already has the maximum of %d lines: sku %q cannot be a line more; remove a line first", c.ID, maxLines, variant.GetSku())
		}
		c.Lines = append(c.Lines, lineRow{LineID: uuid.Must(uuid.NewV7()).String(), SKU: variant.GetSku()})
		l = &c.Lines[len(c.Lines)-1]
	} else if total := l.Quantity + quantity; total > maxQuantity {
		return rpcerr.Invalid(field, fmt.Sprintf("line %s already has %d of sku %q; adding %d would make %d, more than %d", l.LineID, l.Quantity, l.SKU, quantity, total, maxQuantity))
	}
	price := variant.GetPrice()
	l.Quantity += quantity
	l.ProductID, l.ProductName, l.VariantName = variant.GetProductId(), variant.GetProductName(), variant.GetName()
	l.PriceMinor, l.Currency = price.GetAmountMinor(), price.GetCurrencyCode()
	return nil
}

// UpdateLine sets a line's quantity.
func (s *Service) UpdateLine(ctx context.Context, customer string, req *cartv1.UpdateLineRequest) (*cartv1.Cart, error) {
	if err := checkLineID(req.GetLineId()); err != nil {
		return nil, err
	}
	if err := checkQuantity(req.GetQuantity()); err != nil {
		return nil, err
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(c *cartRow) error {
		l := c.line(req.GetLineId())
		if l == nil {
			return rpcerr.NotFound("line", req.GetLineId())
		}
		l.Quantity = req.GetQuantity()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

// RemoveLine removes a line.
func (s *Service) RemoveLine(ctx context.Context, customer string, req *cartv1.RemoveLineRequest) (*cartv1.Cart, error) {
	if err := checkLineID(req.GetLineId()); err != nil {
		return nil, err
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(c *cartRow) error {
		i := slices.IndexFunc(c.Lines, func(l lineRow) bool { return l.LineID == req.GetLineId() })
		if i < 0 {
			return rpcerr.NotFound("line", req.GetLineId())
		}
		c.Lines = slices.Delete(c.Lines, i, i+1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

// ClearCart removes every line; the pickup choice stays.
func (s *Service) ClearCart(ctx context.Context, customer string, req *cartv1.ClearCartRequest) (*cartv1.Cart, error) {
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(c *cartRow) error {
		c.Lines = nil
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

// SetPickup chooses a named store (which must exist) or the nearest store around a point.
func (s *Service) SetPickup(ctx context.Context, customer string, req *cartv1.SetPickupRequest) (*cartv1.Cart, error) {
	// Before reading the cart: an unknown store costs no cart read.
	pickup, err := s.choosePickup(ctx, req.GetPickup())
	if err != nil {
		return nil, err
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(c *cartRow) error {
		pickup.apply(c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.viewWith(ctx, c, learned{store: pickup.store}), nil
}

// pickupChoice is a checked Pickup: a named store, or a point and a radius.
type pickupChoice struct {
	storeID          *string
	lat, lng, radius *float64
	store            *inventoryv1.Store // the named store, as inventory has it
}

func (p pickupChoice) apply(c *cartRow) {
	c.StoreID, c.NearLat, c.NearLng, c.NearRadius = p.storeID, p.lat, p.lng, p.radius
}

// choosePickup checks p (the request's field "pickup"): a named store must exist, a point
// must be on the globe and its radius within bounds.
func (s *Service) choosePickup(ctx context.Context, p *cartv1.Pickup) (pickupChoice, error) {
	switch ch := p.GetChoice().(type) {
	case *cartv1.Pickup_StoreId:
		if ch.StoreId == "" {
			return pickupChoice{}, rpcerr.Invalid("pickup.store_id", "must not be empty")
		}
		if !utf8.ValidString(ch.StoreId) { // see checkCartID
			return pickupChoice{}, rpcerr.Invalid("pickup.store_id", utf8field.Problem)
		}
		if !storeid.Valid(ch.StoreId) {
			// No store has it: refused here, not sent to inventory (one too big to send at
			// all would come back as an outage, retried for ever).
			return pickupChoice{}, rpcerr.Invalid("pickup.store_id", "not a store id: "+storeid.Rule)
		}
		store, err := s.store(ctx, ch.StoreId)
		if err != nil {
			return pickupChoice{}, err
		}
		return pickupChoice{storeID: &ch.StoreId, store: store}, nil
	case *cartv1.Pickup_Nearest:
		var v rpcerr.Violations
		loc := ch.Nearest.GetLocation()
		if loc == nil {
			v.Add("pickup.nearest.location", "is required")
		} else {
			if la := loc.GetLatitude(); math.IsNaN(la) || la < -90 || la > 90 {
				v.Addf("pickup.nearest.location.latitude", "must be between -90 and 90, got %v", la)
			}
			if ln := loc.GetLongitude(); math.IsNaN(ln) || ln < -180 || ln > 180 {
				v.Addf("pickup.nearest.location.longitude", "must be between -180 and 180, got %v", ln)
			}
		}
		if r := ch.Nearest.GetRadiusMeters(); math.IsNaN(r) || r < 0 || r > maxRadiusMeters {
			v.Addf("pickup.nearest.radius_meters", "must be between 0 and %d, got %v", maxRadiusMeters, r)
		}
		if err := v.Err(); err != nil {
			return pickupChoice{}, err
		}
		la, ln, r := loc.GetLatitude(), loc.GetLongitude(), ch.Nearest.GetRadiusMeters()
		return pickupChoice{lat: &la, lng: &ln, radius: &r}, nil
	default:
		return pickupChoice{}, rpcerr.Invalid("pickup", "choose a store_id or nearest")
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// unsettledError is writable's answer for a cart whose checkout lease lapsed without an answer:
// mutate settles the checkout (settle) and tries the change again.
type unsettledError struct{ c *cartRow }

func (e unsettledError) Error() string {
	return fmt.Sprintf("cart %s has a checkout (key %s) whose outcome is not settled", e.c.ID, deref(e.c.CheckoutKey))
}
