package fulfilment

import (
	"fmt"
	"math"
	"net/mail"
	"regexp"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/money"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// Limits of a checkout.
const (
	maxLines        = 100
	maxQuantity     = 99
	maxIDLen        = 128
	maxNameLen      = 200
	maxNoteLen      = 500
	maxPickupName   = 100
	maxRadiusMeters = 100_000
)

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// validatePlaceOrder reports every invalid field of a checkout at once.
func validatePlaceOrder(req *fulfilmentv1.PlaceOrderRequest) error {
	var v rpcerr.Violations
	text := func(field, s string, max int, required bool) {
		if p := textProblem(s, max, required); p != "" {
			v.Add(field, p)
		}
	}
	text("idempotency_key", req.GetIdempotencyKey(), maxIDLen, true)
	text("customer_id", req.GetCustomerId(), auth.MaxCustomerIDLen, true) // a customer token's subject
	text("cart_id", req.GetCartId(), maxIDLen, false)
	text("store_id", req.GetStoreId(), maxIDLen, false)
	text("customer_note", req.GetCustomerNote(), maxNoteLen, false)
	text("pickup_name", req.GetPickupName(), maxPickupName, false)
	if e := req.GetEmail(); e != "" {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e || len(e) > 254 {
			v.Add("email", "not an email address like shopper@example.com")
		}
	}
	if req.GetStoreId() == "" {
		near := req.GetNear()
		switch {
		case near == nil:
			v.Add("near", "required when store_id is empty")
		case math.IsNaN(near.GetLatitude()) || math.Abs(near.GetLatitude()) > 90:
			v.Add("near.latitude", "must be between -90 and 90")
		case math.IsNaN(near.GetLongitude()) || math.Abs(near.GetLongitude()) > 180:
			v.Add("near.longitude", "must be between -180 and 180")
		}
		if r := req.GetRadiusMeters(); math.IsNaN(r) || r < 0 || r > maxRadiusMeters {
			v.Addf("radius_meters", "must be between 0 and %d", maxRadiusMeters)
		}
	}
	lines := req.GetLines()
	switch {
	case len(lines) == 0:
		v.Add("lines", "at least one line is required")
	case len(lines) > maxLines:
		v.Addf("lines", "at most %d lines, got %d", maxLines, len(lines))
	}
	seen := map[string]bool{}
	currency := ""
	for i, l := range lines {
		f := func(name string) string { return fmt.Sprintf("lines[%d].%s", i, name) }
		text(f("line_id"), l.GetLineId(), 64, true)
		if id := l.GetLineId(); id != "" {
			if seen[id] {
				v.Add(f("line_id"), fmt.Sprintf("%q is used by an earlier line", rpcerr.Echo(id)))
			}
			seen[id] = true
		}
		text(f("sku"), l.GetSku(), 64, true)
		text(f("product_name"), l.GetProductName(), maxNameLen, false)
		text(f("variant_name"), l.GetVariantName(), maxNameLen, false)
		if q := l.GetQuantity(); q < 1 || q > maxQuantity {
			v.Addf(f("quantity"), "must be between 1 and %d, got %d", maxQuantity, q)
		}
		price := l.GetUnitPrice()
		switch {
		case price == nil:
			v.Add(f("unit_price"), "required")
		case price.GetAmountMinor() < 0 || price.GetAmountMinor() > money.MaxAmountMinor:
			v.Addf(f("unit_price.amount_minor"), "must be between 0 and %d, got %d", money.MaxAmountMinor, price.GetAmountMinor())
		case !currencyCode.MatchString(price.GetCurrencyCode()):
			v.Add(f("unit_price.currency_code"), "must be an ISO 4217 code like USD")
		case currency == "":
			currency = price.GetCurrencyCode()
		case price.GetCurrencyCode() != currency:
			v.Addf(f("unit_price.currency_code"), "is %s but earlier lines are in %s: one order, one currency", price.GetCurrencyCode(), currency)
		}
	}
	return v.Err()
}
