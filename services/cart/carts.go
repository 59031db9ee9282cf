package cart

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
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
	OrderID               *string
	CreateTime            time.Time
	UpdateTime            time.Time
	Lines                 []lineRow
}

// lineRow is a cart line as stored, with the catalog's answer when it was last priced.
type lineRow struct {
	LineID, SKU string
	Quantity    int32
	ProductID   string
	ProductName string
	VariantName string
	PriceMinor  int64
	Currency    string
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

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// loadCart reads customer's cart id with its lines, locking the cart row when forUpdate.
// Another customer's cart is NotFound, exactly like a cart that does not exist.
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
	if c.Lines, err = loadLines(ctx, q, id); err != nil {
		return nil, err
	}
	return c, nil
}

// cartColumns are the carts columns a cartRow holds, in scanTargets' order.
const cartColumns = `id, customer_id, state, pickup_store_id, near_lat, near_lng, near_radius_m, version,
	checkout_key, coalesce(checkout_until > now(), false), order_id, create_time, update_time`

func (c *cartRow) scanTargets() []any {
	return []any{&c.ID, &c.CustomerID, &c.State, &c.StoreID, &c.NearLat, &c.NearLng,
		&c.NearRadius, &c.Version, &c.CheckoutKey, &c.CheckingOut, &c.OrderID, &c.CreateTime, &c.UpdateTime}
}

// loadLines reads a cart's lines in their order.
func loadLines(ctx context.Context, q querier, id string) ([]lineRow, error) {
	rows, err := q.Query(ctx, `
		SELECT line_id, sku, quantity, product_id, product_name, variant_name, price_minor, currency
		FROM cart_lines WHERE cart_id = $1 ORDER BY position`, id)
	if err != nil {
		return nil, fmt.Errorf("read lines of cart %s: %w", id, err)
	}
	lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (lineRow, error) {
		var l lineRow
		err := r.Scan(&l.LineID, &l.SKU, &l.Quantity, &l.ProductID, &l.ProductName, &l.VariantName, &l.PriceMinor, &l.Currency)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("read lines of cart %s: %w", id, err)
	}
	return lines, nil
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
	}
	return nil
}

// mutate applies change to customer's cart in one transaction: lock the row, check state and
// version, change, bump the version. Any error rolls everything back.
func (s *Service) mutate(ctx context.Context, customer, cartID string, expectedVersion int64, change func(tx pgx.Tx, c *cartRow) error) (*cartRow, error) {
	if cartID == "" {
		return nil, rpcerr.Invalid("cart_id", "is required")
	}
	var out *cartRow
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		c, err := loadCart(ctx, tx, customer, cartID, true)
		if err != nil {
			return err
		}
		if err := writable(c, expectedVersion); err != nil {
			return err
		}
		if err := change(tx, c); err != nil {
			return err
		}
		// The version bump reads the row back as the change left it; then its lines.
		out = &cartRow{}
		if err := tx.QueryRow(ctx, `UPDATE carts SET version = version + 1, update_time = now() WHERE id = $1
			RETURNING `+cartColumns, c.ID).Scan(out.scanTargets()...); err != nil {
			return fmt.Errorf("bump cart %s: %w", c.ID, err)
		}
		out.Lines, err = loadLines(ctx, tx, cartID)
		return err
	})
	return out, err
}

// CreateCart starts an empty cart for customer.
func (s *Service) CreateCart(ctx context.Context, customer string) (*cartv1.Cart, error) {
	id := uuid.Must(uuid.NewV7()).String()
	c := &cartRow{} // a new cart has no lines
	if err := s.db.QueryRow(ctx, `INSERT INTO carts (id, customer_id) VALUES ($1, $2) RETURNING `+cartColumns,
		id, customer).Scan(c.scanTargets()...); err != nil {
		return nil, fmt.Errorf("create cart: %w", err)
	}
	return s.view(ctx, c), nil
}

// GetCart returns customer's cart, repriced, with availability at the chosen store.
func (s *Service) GetCart(ctx context.Context, customer, cartID string) (*cartv1.Cart, error) {
	if cartID == "" {
		return nil, rpcerr.Invalid("cart_id", "is required")
	}
	c, err := loadCart(ctx, s.db, customer, cartID, false)
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
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
	if req.GetCartId() == "" {
		v.Add("cart_id", "is required")
	}
	if req.GetSku() == "" {
		v.Add("sku", "is required")
	}
	if q := req.GetQuantity(); q < minQuantity || q > maxQuantity {
		v.Addf("quantity", "must be between %d and %d, got %d", minQuantity, maxQuantity, q)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	// Ask the catalog before the transaction: no network wait while the cart row is locked.
	variant, err := s.orderableVariant(ctx, req.GetSku())
	if err != nil {
		return nil, err
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(tx pgx.Tx, c *cartRow) error {
		price := variant.GetPrice()
		if l := c.lineBySKU(req.GetSku()); l != nil {
			total := l.Quantity + req.GetQuantity()
			if total > maxQuantity {
				return rpcerr.Invalid("quantity", fmt.Sprintf("line %s already has %d of sku %q; adding %d would make %d, more than %d", l.LineID, l.Quantity, l.SKU, req.GetQuantity(), total, maxQuantity))
			}
			_, err := tx.Exec(ctx, `
				UPDATE cart_lines SET quantity = $3, product_id = $4, product_name = $5, variant_name = $6, price_minor = $7, currency = $8
				WHERE cart_id = $1 AND line_id = $2`,
				c.ID, l.LineID, total, variant.GetProductId(), variant.GetProductName(), variant.GetName(), price.GetAmountMinor(), price.GetCurrencyCode())
			return err
		}
		if len(c.Lines) >= maxLines {
			return rpcerr.FailedPrecondition("cart %q already has the maximum of %d lines", c.ID, maxLines)
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO cart_lines (cart_id, line_id, sku, quantity, position, product_id, product_name, variant_name, price_minor, currency)
			VALUES ($1, $2, $3, $4, (SELECT coalesce(max(position), 0) + 1 FROM cart_lines WHERE cart_id = $1), $5, $6, $7, $8, $9)`,
			c.ID, uuid.Must(uuid.NewV7()).String(), req.GetSku(), req.GetQuantity(),
			variant.GetProductId(), variant.GetProductName(), variant.GetName(), price.GetAmountMinor(), price.GetCurrencyCode())
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

// UpdateLine sets a line's quantity.
func (s *Service) UpdateLine(ctx context.Context, customer string, req *cartv1.UpdateLineRequest) (*cartv1.Cart, error) {
	if req.GetLineId() == "" {
		return nil, rpcerr.Invalid("line_id", "is required")
	}
	if err := checkQuantity(req.GetQuantity()); err != nil {
		return nil, err
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(tx pgx.Tx, c *cartRow) error {
		if c.line(req.GetLineId()) == nil {
			return rpcerr.NotFound("line", req.GetLineId())
		}
		_, err := tx.Exec(ctx, `UPDATE cart_lines SET quantity = $3 WHERE cart_id = $1 AND line_id = $2`, c.ID, req.GetLineId(), req.GetQuantity())
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

// RemoveLine removes a line.
func (s *Service) RemoveLine(ctx context.Context, customer string, req *cartv1.RemoveLineRequest) (*cartv1.Cart, error) {
	if req.GetLineId() == "" {
		return nil, rpcerr.Invalid("line_id", "is required")
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(tx pgx.Tx, c *cartRow) error {
		if c.line(req.GetLineId()) == nil {
			return rpcerr.NotFound("line", req.GetLineId())
		}
		_, err := tx.Exec(ctx, `DELETE FROM cart_lines WHERE cart_id = $1 AND line_id = $2`, c.ID, req.GetLineId())
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

// ClearCart removes every line; the pickup choice stays.
func (s *Service) ClearCart(ctx context.Context, customer string, req *cartv1.ClearCartRequest) (*cartv1.Cart, error) {
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(tx pgx.Tx, c *cartRow) error {
		_, err := tx.Exec(ctx, `DELETE FROM cart_lines WHERE cart_id = $1`, c.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

// SetPickup chooses a named store (which must exist) or the nearest store around a point.
func (s *Service) SetPickup(ctx context.Context, customer string, req *cartv1.SetPickupRequest) (*cartv1.Cart, error) {
	var storeID *string
	var lat, lng, radius *float64
	switch ch := req.GetPickup().GetChoice().(type) {
	case *cartv1.Pickup_StoreId:
		if ch.StoreId == "" {
			return nil, rpcerr.Invalid("pickup.store_id", "must not be empty")
		}
		// Before the transaction: no network wait while the cart row is locked.
		if _, err := s.store(ctx, ch.StoreId); err != nil {
			return nil, err
		}
		storeID = &ch.StoreId
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
			return nil, err
		}
		la, ln, r := loc.GetLatitude(), loc.GetLongitude(), ch.Nearest.GetRadiusMeters()
		lat, lng, radius = &la, &ln, &r
	default:
		return nil, rpcerr.Invalid("pickup", "choose a store_id or nearest")
	}
	c, err := s.mutate(ctx, customer, req.GetCartId(), req.GetExpectedVersion(), func(tx pgx.Tx, c *cartRow) error {
		_, err := tx.Exec(ctx, `UPDATE carts SET pickup_store_id = $2, near_lat = $3, near_lng = $4, near_radius_m = $5 WHERE id = $1`,
			c.ID, storeID, lat, lng, radius)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
