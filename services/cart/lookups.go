package cart

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/catalog"
)

// NATS subjects the cart asks. Inventory and fulfilment serve them; the contracts are the
// request/response messages in proto/handoff/inventory/v1 and proto/handoff/fulfilment/v1.
var (
	subjectGetStore        = natsrpc.Subject("inventory", "get_store")
	subjectGetAvailability = natsrpc.Subject("inventory", "get_availability")
	subjectPlaceOrder      = natsrpc.Subject("fulfilment", "place_order")
)

// variants asks the catalog about skus. SKUs the catalog does not know are absent from the
// result; the error is the catalog being unreachable or failing.
func (s *Service) variants(ctx context.Context, skus []string) (map[string]*catalogv1.Variant, error) {
	out := make(map[string]*catalogv1.Variant, len(skus))
	if len(skus) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.lookupTimeout)
	defer cancel()
	var res catalogv1.BatchGetVariantsResponse
	err := natsrpc.Call(ctx, s.nc, catalog.SubjectBatchGetVariants, &catalogv1.BatchGetVariantsRequest{Skus: skus}, &res)
	switch {
	case status.Code(err) == codes.NotFound && len(skus) > 1:
		// One unknown SKU fails the whole batch; ask one at a time to keep the others. Rare:
		// it takes a SKU that was deleted from the catalog after it was put in the cart.
		for _, sku := range skus {
			one, err := s.variants(ctx, []string{sku})
			if err != nil {
				return nil, err
			}
			for k, v := range one {
				out[k] = v
			}
		}
		return out, nil
	case status.Code(err) == codes.NotFound:
		return out, nil
	case err != nil:
		return nil, err
	}
	for _, v := range res.GetVariants() {
		out[v.GetSku()] = v
	}
	return out, nil
}

// orderableVariant returns the catalog's variant for sku if it can be ordered: an unknown SKU
// or one of an archived product is NotFound naming it, a variant switched off is
// FailedPrecondition, a price in another currency than the cart's is FailedPrecondition.
func (s *Service) orderableVariant(ctx context.Context, sku string) (*catalogv1.Variant, error) {
	vs, err := s.variants(ctx, []string{sku})
	if err != nil {
		return nil, lookupFailed("catalog", err)
	}
	v, ok := vs[sku]
	if err := s.checkOrderable(sku, v, ok); err != nil {
		return nil, err
	}
	return v, nil
}

func (s *Service) checkOrderable(sku string, v *catalogv1.Variant, known bool) error {
	switch {
	case !known:
		return rpcerr.NotFound("sku", sku)
	case !v.GetOrderable() && v.Available != nil && !v.GetAvailable():
		return rpcerr.FailedPrecondition("sku %q is not available to order at the moment", sku)
	case !v.GetOrderable():
		// The product is archived: to a shopper it no longer exists.
		return rpcerr.NotFound("sku", sku)
	case v.GetPrice().GetCurrencyCode() != s.currency:
		return rpcerr.FailedPrecondition("sku %q is priced in %s; carts are in %s", sku, v.GetPrice().GetCurrencyCode(), s.currency)
	}
	return nil
}

// store asks inventory for a store: unknown is NotFound naming pickup.store_id.
func (s *Service) store(ctx context.Context, storeID string) (*inventoryv1.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, s.lookupTimeout)
	defer cancel()
	var res inventoryv1.GetStoreResponse
	err := natsrpc.Call(ctx, s.nc, subjectGetStore, &inventoryv1.GetStoreRequest{StoreId: storeID}, &res)
	switch status.Code(err) {
	case codes.OK:
		return res.GetStore(), nil
	case codes.NotFound:
		return nil, status.Errorf(codes.NotFound, "pickup.store_id: store %q not found", storeID)
	default:
		return nil, lookupFailed("inventory", err)
	}
}

// lookupFailed turns a failed question to another service into the cart's answer: the other
// service's refusal of bad input would be our bug (Internal); its absence is Unavailable, so the
// client retries.
func lookupFailed(service string, err error) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return status.Errorf(codes.Unavailable, "the %s service did not answer in time; try again", service)
	case codes.Canceled:
		return status.Error(codes.Canceled, "request canceled")
	default:
		return fmt.Errorf("ask %s: %v", service, err) // %v: its status is not ours to pass on
	}
}

// view renders c for the shopper: today's prices from the catalog, availability at the chosen
// store and its name from inventory. The three questions go out at once; when one goes
// unanswered the cart is still shown (last known prices, availability -1, no store name) and
// the miss is logged at debug.
func (s *Service) view(ctx context.Context, c *cartRow) *cartv1.Cart {
	return s.viewPriced(ctx, c, nil)
}

// viewPriced is view with the catalog's answer for the cart's SKUs already in hand (priced):
// the catalog is asked only when priced is nil.
func (s *Service) viewPriced(ctx context.Context, c *cartRow, priced map[string]*catalogv1.Variant) *cartv1.Cart {
	var (
		wg        sync.WaitGroup
		variants  = priced
		available map[string]int32
		storeName string
	)
	if len(c.Lines) > 0 && priced == nil {
		wg.Go(func() {
			vs, err := s.variants(ctx, c.skus())
			if err != nil {
				s.log.DebugContext(ctx, "catalog did not price the cart; showing the last known prices", "cart_id", c.ID, "err", err)
				return
			}
			variants = vs
		})
	}
	if c.StoreID != nil {
		if len(c.Lines) > 0 && c.State == stateOpen {
			wg.Go(func() { available = s.availability(ctx, *c.StoreID, c.skus()) })
		}
		wg.Go(func() {
			st, err := s.store(ctx, *c.StoreID)
			if err != nil {
				s.log.DebugContext(ctx, "inventory did not name the pickup store", "store_id", *c.StoreID, "err", err)
				return
			}
			storeName = st.GetName()
		})
	}
	wg.Wait()

	out := &cartv1.Cart{
		Id:         c.ID,
		CustomerId: c.CustomerID,
		State:      cartv1.CartState_CART_STATE_OPEN,
		Version:    c.Version,
		OrderId:    deref(c.OrderID),
		CreateTime: timestamppb.New(c.CreateTime),
		UpdateTime: timestamppb.New(c.UpdateTime),
		Subtotal:   &commonv1.Money{CurrencyCode: s.currency},
	}
	if c.State == stateCheckedOut {
		out.State = cartv1.CartState_CART_STATE_CHECKED_OUT
	}
	switch {
	case c.StoreID != nil:
		out.Pickup = &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: *c.StoreID}, StoreName: storeName}
	case c.NearLat != nil:
		out.Pickup = &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
			Location:     &commonv1.LatLng{Latitude: *c.NearLat, Longitude: *c.NearLng},
			RadiusMeters: derefFloat(c.NearRadius),
		}}}
	}
	for _, l := range c.Lines {
		line := &cartv1.CartLine{
			LineId: l.LineID, Sku: l.SKU, ProductId: l.ProductID, ProductName: l.ProductName, VariantName: l.VariantName,
			Quantity: l.Quantity, UnitPrice: &commonv1.Money{AmountMinor: l.PriceMinor, CurrencyCode: l.Currency},
			AvailableAtStore: -1,
		}
		if v, ok := variants[l.SKU]; ok {
			line.ProductId, line.ProductName, line.VariantName = v.GetProductId(), v.GetProductName(), v.GetName()
			line.UnitPrice = &commonv1.Money{AmountMinor: v.GetPrice().GetAmountMinor(), CurrencyCode: v.GetPrice().GetCurrencyCode()}
		}
		if n, ok := available[l.SKU]; ok {
			line.AvailableAtStore = n
		}
		line.LineTotal = &commonv1.Money{AmountMinor: line.UnitPrice.GetAmountMinor() * int64(l.Quantity), CurrencyCode: line.UnitPrice.GetCurrencyCode()}
		out.Subtotal.AmountMinor += line.LineTotal.GetAmountMinor()
		out.Lines = append(out.Lines, line)
	}
	return out
}

// availability asks inventory what storeID can promise of skus; nil when it does not answer.
func (s *Service) availability(ctx context.Context, storeID string, skus []string) map[string]int32 {
	ctx, cancel := context.WithTimeout(ctx, s.lookupTimeout)
	defer cancel()
	var res inventoryv1.GetAvailabilityResponse
	if err := natsrpc.Call(ctx, s.nc, subjectGetAvailability, &inventoryv1.GetAvailabilityRequest{StoreId: storeID, Skus: skus}, &res); err != nil {
		s.log.DebugContext(ctx, "inventory did not give availability; showing it as unknown", "store_id", storeID, "err", err)
		return nil
	}
	out := make(map[string]int32, len(skus))
	for _, a := range res.GetAvailability() {
		out[a.GetSku()] = a.GetAvailable()
	}
	return out
}

func derefFloat(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}
