package cart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/utf8field"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// Checkout limits.
const (
	minKeyLen        = 8
	maxKeyLen        = 128
	maxNoteRunes     = 280
	maxPickupName    = 64
	maxEmailAddrSize = 254
)

// Checkout places the order for customer's cart. How it stays one order per key and never
// marks a cart without an order:
//
//  1. Claim, in one conditional UPDATE: if the cart is the caller's, open, not leased to another
//     key, at the expected version, with lines and a pickup choice, record the key and start the
//     checkout lease, returning the cart as claimed. While the lease runs every other change is
//     refused (their UPDATEs require no running lease), so the cart cannot change under the
//     order. Concurrent retries with the same key join the lease (checkout_joins counts the
//     requests in it; one that ends without an order leaves, and the last to leave opens the
//     cart); a different key is refused with Aborted. Only when the claim matches nothing is the cart read, to say why (or, already
//     checked out with this same key, to fetch that order again). Concurrent checkouts'
//     claims share one statement (checkoutwrites.go).
//  2. Price every line as the cart shows it: the catalog's answers the cart keeps, the catalog
//     asked for any it lacks (outside any transaction).
//  3. Ask fulfilment to place the order (idempotent by customer and key), within
//     CheckoutTimeout.
//  4. CONFIRMED or PENDING: mark the cart checked out with the order id (one UPDATE, shared
//     like the claims). REJECTED: end the lease and leave the cart open for the shopper to
//     change; the rejected order is returned. No answer: the lease stays until it expires, as
//     the order may exist; the client retries with the same key and gets it. Once the lease has
//     lapsed, the next read, change or checkout of the cart first settles it (settle): fulfilment is
//     asked for the order under the lapsed key, without placing one; the cart is checked out as
//     that order if there is one, and opens again if there is none. So a cart never has two
//     orders, nor an order for lines it no longer shows.
func (s *Service) Checkout(ctx context.Context, customer string, req *cartv1.CheckoutRequest) (*fulfilmentv1.Order, *cartv1.Cart, error) {
	email, err := checkCheckout(req, s.currency)
	if err != nil {
		return nil, nil, err
	}
	key := req.GetIdempotencyKey()

	// 1. Claim.
	c, already, err := s.claim(ctx, customer, req.GetCartId(), key, req.GetExpectedVersion())
	if err != nil {
		return nil, nil, err
	}

	// 2. Price. A cart already checked out asks fulfilment for the order it has: the last known
	// prices fill the request, which fulfilment answers from the order it stored.
	lines, variants, err := s.priceForOrder(ctx, c, !already)
	if err == nil && !already {
		err = checkSubtotal(req.GetExpectedSubtotal(), lines)
	}
	if err != nil {
		// Nothing was placed by this request: it leaves the lease, which opens the cart if no
		// other request with the key is in it.
		if already || s.leaveLease(ctx, c.ID, key) || !rpcerr.IsStatus(err) || status.Code(err) == codes.Unavailable {
			return nil, nil, err
		}
		// Another request with the key is in the lease. Refused by today's catalog (a product
		// archived since), this one may still have an order: the other may have placed it at the
		// prices it read, and fulfilment answers a retry from that order whatever the catalog
		// says now.
		order, ferr := s.findCheckoutOrder(ctx, c, key)
		switch {
		case ferr != nil:
			return nil, nil, ferr
		case order != nil:
			return s.finishCheckout(ctx, customer, c, key, already, order, nil)
		}
		return nil, nil, status.Errorf(codes.Unavailable, "a checkout of cart %q with this idempotency_key is still under way (%s); retry with the same key to learn its outcome",
			c.ID, status.Convert(err).Message())
	}

	// 3. Place.
	placeReq := &fulfilmentv1.PlaceOrderRequest{
		IdempotencyKey: key,
		CustomerId:     customer,
		CartId:         c.ID,
		Lines:          lines,
		CustomerNote:   req.GetCustomerNote(),
		PickupName:     req.GetPickupName(),
		Email:          email,
	}
	if c.StoreID != nil {
		placeReq.StoreId = *c.StoreID
	} else {
		placeReq.Near = &commonv1.LatLng{Latitude: *c.NearLat, Longitude: *c.NearLng}
		placeReq.RadiusMeters = derefFloat(c.NearRadius)
	}
	placeCtx, cancel := context.WithTimeout(ctx, s.checkoutTimeout)
	var res fulfilmentv1.PlaceOrderResponse
	err = natsrpc.Call(placeCtx, s.nc, subjectPlaceOrder, placeReq, &res)
	cancel()
	if err != nil {
		return nil, nil, s.placeFailed(ctx, c, key, err)
	}
	return s.finishCheckout(ctx, customer, c, key, already, res.GetOrder(), variants)
}

// finishCheckout is step 4 of Checkout: the cart c, claimed with key, as fulfilment's order
// leaves it, and both as answered. The cart shown is the one in hand, as the settling left it;
// it is read again only when this request did not mark it: another request with this key marked
// it meanwhile, or the lease ended first (the order rejected meanwhile, the cart opened again).
func (s *Service) finishCheckout(ctx context.Context, customer string, c *cartRow, key string, already bool, order *fulfilmentv1.Order,
	variants map[string]*catalogv1.Variant) (*fulfilmentv1.Order, *cartv1.Cart, error) {
	switch {
	case already:
		// Read checked out with this key in step 1: nothing changes it any more.
	case order.GetState() == fulfilmentv1.OrderState_ORDER_STATE_REJECTED:
		s.endLease(ctx, c.ID, key)
		c.CheckingOut, c.Unsettled = false, false
	default:
		lines := linesOf(c.Lines, order)
		marked, err := s.markCheckedOut(ctx, c.ID, key, order.GetId(), lines)
		s.rows.drop(c.ID) // no edit follows a checkout
		if err != nil {
			// The order exists; the retry with the same key marks the cart.
			return nil, nil, err
		}
		if marked == nil {
			if c, err = loadCart(ctx, s.db, customer, c.ID, false); err != nil {
				return nil, nil, err
			}
			break
		}
		// This request marked it: the lines are those claimed under the lease (nothing may
		// change them meanwhile), priced a moment ago in step 2.
		orderID := order.GetId()
		c.State, c.OrderID, c.CheckoutKey, c.CheckingOut, c.Unsettled = stateCheckedOut, &orderID, &key, false, false
		c.Lines = lines
		c.Version, c.UpdateTime = marked.version, marked.updateTime
	}
	return order, s.viewWith(ctx, c, learned{variants: variants}), nil
}

// claim records key and starts the checkout lease on customer's open cart (step 1 of Checkout)
// and returns the cart as claimed; or, when the cart is already checked out with key, returns
// it with already set. Anything else is refused with the reason.
func (s *Service) claim(ctx context.Context, customer, cartID, key string, expectedVersion int64) (c *cartRow, already bool, err error) {
	// Together with the concurrent checkouts' claims; what that did not claim, alone. A claim
	// whose batch had begun is decided even if its caller has gone (a deadline, an app closed):
	// it is left at once, or the cart would read "being checked out", refusing every edit,
	// until the lease lapsed, for a checkout that placed nothing.
	leave := func(c *cartRow) {
		if c != nil { // claimed: nil is a claim refused or taken by another, nothing to leave
			s.leaveLease(context.WithoutCancel(ctx), cartID, key)
		}
	}
	if c, err := s.claims.DoUndo(ctx, claimReq{cartID: cartID, customer: customer, key: key, expectedVersion: expectedVersion}, leave); c != nil && err == nil {
		return c, false, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("claim cart %s for checkout: %w", cartID, err)
	}
	// A claim that matched nothing and a read that finds nothing against it means the cart
	// changed in between (a lease lapsed, a change landed): claim again, a few times at most.
	for range 3 {
		c = &cartRow{}
		err = s.db.QueryRow(ctx, claimOneSQL,
			cartID, customer, key, expectedVersion, s.checkoutLease.Microseconds(), stateOpen).Scan(c.scanTargets()...)
		if err == nil {
			if ctx.Err() != nil { // claimed as the caller went: likewise left
				leave(c)
				return nil, false, fmt.Errorf("claim cart %s for checkout: %w", cartID, ctx.Err())
			}
			return c, false, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return nil, false, fmt.Errorf("claim cart %s for checkout: %w", cartID, err)
		}
		// Refused: read the cart to say why, in the order the checks have always been made.
		if c, err = loadCart(ctx, s.db, customer, cartID, false); err != nil {
			return nil, false, err
		}
		switch {
		case c.Unsettled:
			// A checkout's lease lapsed without an answer: settle it, then claim again.
			if err := s.settle(ctx, c); err != nil {
				return nil, false, err
			}
			continue
		case c.State == stateCheckedOut && deref(c.CheckoutKey) == key:
			return c, true, nil
		case c.State == stateCheckedOut:
			return nil, false, rpcerr.FailedPrecondition("cart %q already checked out as order %q", c.ID, deref(c.OrderID))
		case c.CheckingOut && deref(c.CheckoutKey) != key:
			return nil, false, rpcerr.Aborted("cart %q is being checked out by another request; retry that request with its idempotency key", c.ID)
		case expectedVersion != 0 && expectedVersion != c.Version:
			return nil, false, rpcerr.Aborted("cart %q is at version %d, not expected_version %d: it was changed elsewhere; reload it and try again", c.ID, c.Version, expectedVersion)
		case len(c.Lines) == 0:
			return nil, false, rpcerr.FailedPrecondition("cart %q has no lines to check out", c.ID)
		case !c.hasPickup():
			return nil, false, rpcerr.FailedPrecondition("cart %q has no pickup choice: call SetPickup first", c.ID)
		}
	}
	return nil, false, rpcerr.Aborted("cart %q kept changing during checkout; reload it and try again", cartID)
}

func checkCheckout(req *cartv1.CheckoutRequest, currency string) (email string, err error) {
	var v rpcerr.Violations
	checkCartID(&v, req.GetCartId())
	// Characters, as the API documents and fulfilment counts them, not bytes.
	if key := req.GetIdempotencyKey(); !utf8.ValidString(key) {
		v.Add("idempotency_key", utf8field.Problem)
	} else if n := utf8.RuneCountInString(key); n < minKeyLen || n > maxKeyLen {
		v.Addf("idempotency_key", "must be %d to %d characters, got %d", minKeyLen, maxKeyLen, n)
	} else if strings.TrimSpace(key) == "" {
		// Fulfilment refuses it as missing; refused here, no lease is taken for it first.
		v.Add("idempotency_key", "must not be blank")
	}
	if v2 := req.GetExpectedVersion(); v2 < 0 {
		v.Add("expected_version", "must not be negative")
	}
	if m := req.GetExpectedSubtotal(); m != nil {
		if m.GetAmountMinor() < 0 {
			v.Add("expected_subtotal.amount_minor", "must not be negative")
		}
		// Another currency is the client's mistake, not a price change: every line is priced in
		// the catalog's (checkOrderable).
		if m.GetCurrencyCode() != currency {
			v.Addf("expected_subtotal.currency_code", "must be the cart's currency, %s, got %q", currency, rpcerr.Echo(m.GetCurrencyCode()))
		}
	}
	if !utf8.ValidString(req.GetCustomerNote()) || utf8.RuneCountInString(req.GetCustomerNote()) > maxNoteRunes {
		v.Addf("customer_note", "must be at most %d characters", maxNoteRunes)
	}
	if !utf8.ValidString(req.GetPickupName()) || utf8.RuneCountInString(req.GetPickupName()) > maxPickupName {
		v.Addf("pickup_name", "must be at most %d characters", maxPickupName)
	}
	if e := req.GetEmail(); e != "" {
		// The order carries the bare address (shopper@example.com from "Ann <shopper@...>"),
		// and only one that reads back as itself: a quoted local part loses its quotes
		// ("amy b"@example.com gives amy b@example.com), which no mailer takes and fulfilment
		// refuses, after the cart has been claimed for the checkout.
		a, err := mail.ParseAddress(e)
		if err == nil {
			var bare *mail.Address
			if bare, err = mail.ParseAddress(a.Address); err == nil && bare.Address != a.Address {
				err = errors.New("not its own bare address")
			}
		}
		if err != nil || len(a.Address) > maxEmailAddrSize {
			v.Add("email", "must be an email address like shopper@example.com")
		} else {
			email = a.Address
		}
	}
	return email, v.Err()
}

// checkSubtotal refuses a checkout whose lines, priced now, do not add up to the subtotal the
// shopper was shown (nil: not checked). The order would otherwise charge a price changed since
// the cart was read, which the shopper never saw.
func checkSubtotal(want *commonv1.Money, lines []*fulfilmentv1.PlaceOrderLine) error {
	if want == nil {
		return nil
	}
	var got int64 // in the currency checkCheckout has matched: the catalog's, every line's
	for _, l := range lines {
		got += l.GetUnitPrice().GetAmountMinor() * int64(l.GetQuantity())
	}
	if got == want.GetAmountMinor() {
		return nil
	}
	return rpcerr.FailedPrecondition("expected_subtotal: the lines now come to %d %s, not %d (a price changed); show the cart again and check out with its subtotal",
		got, want.GetCurrencyCode(), want.GetAmountMinor())
}

// priceForOrder turns the cart's lines into order lines. current prices them as the cart is
// shown, from the catalog's answers the cart keeps (asking the catalog for those it lacks),
// and refuses lines that can no longer be ordered; otherwise the last known prices are used.
// The order thus carries the prices the shopper was shown. The catalog's events drop a
// changed variant from the cache at once; an event lost on the way is outlived by at most
// Config.CacheTTL, after which the catalog is asked again.
// The catalog's answer (nil when not current) is returned too.
func (s *Service) priceForOrder(ctx context.Context, c *cartRow, current bool) ([]*fulfilmentv1.PlaceOrderLine, map[string]*catalogv1.Variant, error) {
	var variants map[string]*catalogv1.Variant
	if current {
		var err error
		if variants, err = s.variants(ctx, c.skus()); err != nil {
			return nil, nil, lookupFailed("catalog", "", err) // its stored lines: not the caller's to fix
		}
		for _, l := range c.Lines {
			v, ok := variants[l.SKU]
			if err := s.checkOrderable(l.SKU, v, ok); err != nil {
				return nil, nil, status.Errorf(status.Code(err), "line %s: %s; remove it to check out", l.LineID, status.Convert(err).Message())
			}
		}
	}
	out := make([]*fulfilmentv1.PlaceOrderLine, 0, len(c.Lines))
	for _, l := range c.Lines {
		line := &fulfilmentv1.PlaceOrderLine{
			LineId: l.LineID, Sku: l.SKU, ProductName: l.ProductName, VariantName: l.VariantName, Quantity: l.Quantity,
			UnitPrice: &commonv1.Money{AmountMinor: l.PriceMinor, CurrencyCode: l.Currency},
		}
		if v, ok := variants[l.SKU]; ok {
			line.ProductName, line.VariantName = v.GetProductName(), v.GetName()
			line.UnitPrice = &commonv1.Money{AmountMinor: v.GetPrice().GetAmountMinor(), CurrencyCode: v.GetPrice().GetCurrencyCode()}
		}
		out = append(out, line)
	}
	return out, variants, nil
}

// placeFailed decides what a failed place_order means for the cart. A refusal (bad input,
// broken rule) means this request made no order: it leaves the lease (leaveLease), which
// opens the cart unless another request with the key is still in it, and the refusal is
// returned. No answer means the order may exist: the request stays in the lease, so the cart
// cannot change under it until the lease lapses and is settled, and the client is told to
// retry with the same key.
func (s *Service) placeFailed(ctx context.Context, c *cartRow, key string, err error) error {
	cartID := c.ID
	switch code := status.Code(err); code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown, codes.Aborted, codes.ResourceExhausted:
		s.log.WarnContext(ctx, "checkout: fulfilment gave no order; the cart stays frozen until its lease ends", "cart_id", cartID, "code", code, "err", err)
		if code == codes.Canceled {
			return status.Error(codes.Canceled, "checkout canceled; retry with the same idempotency_key to learn its outcome")
		}
		return status.Errorf(codes.Unavailable, "the order could not be confirmed in time; retry with the same idempotency_key (%s)", code)
	default:
		s.leaveLease(ctx, cartID, key) // a checked-out cart is not open: nothing to leave
		return err
	}
}

// linesOf is the cart's lines as order has them: the names and prices it was placed with,
// which a checked-out cart shows from then on (the catalog's later changes are not the order's).
func linesOf(lines []lineRow, order *fulfilmentv1.Order) []lineRow {
	out := slices.Clone(lines)
	for i := range out {
		for _, ol := range order.GetLines() {
			if ol.GetLineId() == out[i].LineID {
				out[i].ProductName, out[i].VariantName = ol.GetProductName(), ol.GetVariantName()
				out[i].PriceMinor, out[i].Currency = ol.GetUnitPrice().GetAmountMinor(), ol.GetUnitPrice().GetCurrencyCode()
				break
			}
		}
	}
	return out
}

// markCheckedOut records the order on the cart, with its lines as the order has them
// (linesOf), in one statement, provided the cart is still under the lease of key. Another
// request with the same key may have done it already, or the lease may have ended since (the
// order rejected and the cart opened again); that changes nothing, and marked is nil.
// Otherwise marked is the cart's new version and update time.
func (s *Service) markCheckedOut(ctx context.Context, cartID, key, orderID string, lines []lineRow) (marked *cartMark, err error) {
	if orderID == "" {
		return nil, status.Error(codes.Internal, "fulfilment answered without an order id")
	}
	// The order exists: record it even if the caller has gone away meanwhile, within a bound of
	// its own so that a stalled database does not hold the request for ever.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cartWriteTimeout)
	defer cancel()
	// Together with the concurrent checkouts' marks; what that did not mark, alone.
	linesJSON, err := json.Marshal(lines)
	if err != nil {
		return nil, fmt.Errorf("mark cart %s checked out: %w", cartID, err)
	}
	if m, err := s.marks.Do(ctx, markReq{cartID: cartID, key: key, orderID: orderID, lines: linesJSON}); m != nil && err == nil {
		return m, nil
	}
	// One statement instead of lock, read, write: the UPDATE's row lock orders it after any
	// other writer, and its condition is checked again on the row as that writer left it.
	var (
		version int64
		at      time.Time
	)
	err = s.db.QueryRow(ctx, `
		UPDATE carts SET state = 'checked_out', order_id = $2, checkout_key = $3, checkout_until = NULL, lines = $4,
		       version = version + 1, update_time = now()
		WHERE id = $1 AND state <> 'checked_out' AND checkout_key = $3 AND checkout_until IS NOT NULL
		RETURNING version, update_time`, cartID, orderID, key, linesJSON).Scan(&version, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		// Checked out already, no longer under this key's lease (see markManySQL), or gone:
		// read what it holds, after whoever changed it committed.
		var existing *string
		err = s.db.QueryRow(ctx, `SELECT order_id FROM carts WHERE id = $1`, cartID).Scan(&existing)
		if err != nil {
			return nil, fmt.Errorf("mark cart %s checked out as order %s: %w", cartID, orderID, err)
		}
		if existing != nil && *existing != orderID {
			// Only possible when a checkout outlived its lease and another key took over: two
			// orders exist for one cart. Loud, so an operator can cancel one.
			s.log.ErrorContext(ctx, "cart checked out twice", "cart_id", cartID, "order_id", *existing, "other_order_id", orderID)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mark cart %s checked out as order %s: %w", cartID, orderID, err)
	}
	return &cartMark{version: version, updateTime: at}, nil
}

// cartMark is what marking a cart checked out changed.
type cartMark struct {
	version    int64
	updateTime time.Time
}

// settle learns the outcome of c's checkout, whose lease lapsed without an answer: the order
// fulfilment made under its key for this cart, if any, checks the cart out; none, or a rejected
// one, ends the lease and opens the cart again. An order that is not there by then never will
// be: fulfilment takes a place_order only before its deadline (CheckoutTimeout after the cart
// sent it; natsrpc refuses it unhandled later, however long it waited) and writes the order at
// most 12 s after taking it (ReserveTimeout 2 s, then 5 s to settle and 5 s for the write
// batch); the cart sent it at most LookupTimeout (pricing) after its request's claim, and the
// lease lapses no sooner than CheckoutTimeout + 30 s after the last claim (a retry joining the
// lease moves it on). Fulfilment not answering leaves the cart as it
// is: Unavailable.
func (s *Service) settle(ctx context.Context, c *cartRow) error {
	key := deref(c.CheckoutKey)
	order, err := s.findCheckoutOrder(ctx, c, key)
	s.rows.drop(c.ID)
	switch {
	case err == nil && (order == nil || order.GetState() == fulfilmentv1.OrderState_ORDER_STATE_REJECTED):
		wctx, cancel := context.WithTimeout(ctx, cartWriteTimeout)
		defer cancel()
		if _, err := s.db.Exec(wctx, reopenLapsedSQL, c.ID, key, stateOpen); err != nil {
			return fmt.Errorf("open cart %s after its unsettled checkout: %w", c.ID, err)
		}
		s.log.InfoContext(ctx, "checkout settled: no order was made; the cart is open again", "cart_id", c.ID)
		return nil
	case err != nil:
		return err
	}
	if _, err := s.markCheckedOut(ctx, c.ID, key, order.GetId(), linesOf(c.Lines, order)); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "checkout settled: its order was made", "cart_id", c.ID, "order_id", order.GetId())
	return nil
}

// findCheckoutOrder asks fulfilment for the order placed under key for cart c, placing
// nothing: nil when there is none. Fulfilment not answering is Unavailable.
func (s *Service) findCheckoutOrder(ctx context.Context, c *cartRow, key string) (*fulfilmentv1.Order, error) {
	fctx, cancel := context.WithTimeout(ctx, s.lookupTimeout)
	defer cancel()
	var res fulfilmentv1.FindCheckoutOrderResponse
	err := natsrpc.Call(fctx, s.nc, subjectFindCheckout, &fulfilmentv1.FindCheckoutOrderRequest{CustomerId: c.CustomerID, IdempotencyKey: key, CartId: c.ID}, &res)
	switch {
	case status.Code(err) == codes.NotFound:
		return nil, nil
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "cart %q has a checkout whose outcome is not known yet (idempotency_key %q), and fulfilment cannot say now (%s): try again in a moment",
			c.ID, key, status.Code(err))
	}
	return res.GetOrder(), nil
}

// endLease unfreezes the cart after a checkout whose key has a rejected order.
func (s *Service) endLease(ctx context.Context, cartID, key string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cartWriteTimeout)
	defer cancel()
	if _, err := s.db.Exec(wctx, endLeaseSQL, cartID, key, stateOpen); err != nil {
		s.log.WarnContext(ctx, "checkout: ending the lease failed; the cart's next change settles it", "cart_id", cartID, "err", err)
	}
}

// leaveLease takes a request that failed without an order out of the cart's lease
// (leaveLeaseSQL) and reports whether that opened the cart. On a failure to write, the lease
// stays: it runs out and is settled.
func (s *Service) leaveLease(ctx context.Context, cartID, key string) bool {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cartWriteTimeout)
	defer cancel()
	var opened bool
	err := s.db.QueryRow(wctx, leaveLeaseSQL, cartID, key, stateOpen).Scan(&opened)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		s.log.WarnContext(ctx, "checkout: leaving the lease failed; it runs out and is settled", "cart_id", cartID, "err", err)
	}
	return opened
}
