package cart

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
	subjectFindCheckout    = natsrpc.Subject("fulfilment", "find_checkout_order")
)

// variants returns the catalog's answer for skus: from the cache where it has them, the rest
// asked in one request and cached. SKUs the catalog does not know are absent from the result
// (and never cached); the error is the catalog being unreachable or failing.
func (s *Service) variants(ctx context.Context, skus []string) (map[string]*catalogv1.Variant, error) {
	out, missing := s.cachedVariants(skus)
	if len(missing) == 0 {
		return out, nil
	}
	got, err := s.askVariants(ctx, missing)
	if err != nil {
		return nil, err
	}
	maps.Copy(out, got)
	return out, nil
}

// cachedVariants splits skus into the variants the cache has and the SKUs it lacks.
func (s *Service) cachedVariants(skus []string) (map[string]*catalogv1.Variant, []string) {
	out := make(map[string]*catalogv1.Variant, len(skus))
	var missing []string
	for _, sku := range skus {
		if v, ok := s.variantCache.get(sku); ok {
			out[sku] = v
		} else {
			missing = append(missing, sku)
		}
	}
	return out, missing
}

// askVariants asks the catalog about skus and caches its answers.
func (s *Service) askVariants(ctx context.Context, skus []string) (map[string]*catalogv1.Variant, error) {
	gen := s.variantCache.generation()
	out, err := s.fetchVariants(ctx, skus)
	if err != nil {
		return nil, err
	}
	s.variantCache.put(gen, out)
	return out, nil
}

// fetchVariants asks the catalog about skus, never the cache.
func (s *Service) fetchVariants(ctx context.Context, skus []string) (map[string]*catalogv1.Variant, error) {
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
			one, err := s.fetchVariants(ctx, []string{sku})
			if err != nil {
				return nil, err
			}
			maps.Copy(out, one)
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
		return nil, lookupFailed("catalog", "sku", err)
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

// store returns inventory's store storeID, from the cache when it has it: unknown is NotFound
// naming pickup.store_id (and not cached: a store may be created any moment).
func (s *Service) store(ctx context.Context, storeID string) (*inventoryv1.Store, error) {
	if st, ok := s.storeCache.get(storeID); ok {
		return st, nil
	}
	gen := s.storeCache.generation()
	ctx, cancel := context.WithTimeout(ctx, s.lookupTimeout)
	defer cancel()
	var res inventoryv1.GetStoreResponse
	err := natsrpc.Call(ctx, s.nc, subjectGetStore, &inventoryv1.GetStoreRequest{StoreId: storeID}, &res)
	switch status.Code(err) {
	case codes.OK:
		s.storeCache.put(gen, map[string]*inventoryv1.Store{storeID: res.GetStore()})
		return res.GetStore(), nil
	case codes.NotFound:
		return nil, status.Errorf(codes.NotFound, "pickup.store_id: store %q not found", storeID)
	default:
		return nil, lookupFailed("inventory", "pickup.store_id", err)
	}
}

// lookupFailed turns a failed question to another service into the cart's answer. Its absence
// is Unavailable, so the client retries. Its refusal of what the cart passed on from the request
// (a SKU, a store id) is the caller's bad input, not ours: InvalidArgument naming field, the
// request's own field, with the owner's reason. Such text is checked up front (its server's check
// of every request, checkSKU), so this is a backstop for what an owner refuses and the cart does
// not foresee. Any other failure,
// and a refusal of what the cart asked of its own (field ""; its stored lines, say), is ours
// (Internal).
func lookupFailed(service, field string, err error) error {
	if errors.Is(err, natsrpc.ErrNotSent) {
		// Too big to send: no retry would ever get it there.
		if field != "" {
			return rpcerr.Invalid(field, fmt.Sprintf("too large to ask the %s service about", service))
		}
		return status.Errorf(codes.Internal, "the %s service could not be asked: %v", service, err)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return status.Errorf(codes.Unavailable, "the %s service did not answer in time; try again", service)
	case codes.Canceled:
		return status.Error(codes.Canceled, "request canceled")
	case codes.InvalidArgument:
		if field == "" {
			break
		}
		return rpcerr.Invalid(field, fmt.Sprintf("refused by the %s service (%s)", service, status.Convert(err).Message()))
	}
	return fmt.Errorf("ask %s: %v", service, err) // %v: its status is not ours to pass on
}

// view renders c for the shopper: today's prices from the catalog, availability at the chosen
// store and its name from inventory. Prices and the name come from the caches when they have
// them; what must be asked goes out at once. When a question goes unanswered the cart is still
// shown (last known prices, availability -1, no store name) and the miss is logged at debug.
func (s *Service) view(ctx context.Context, c *cartRow) *cartv1.Cart {
	return s.viewWith(ctx, c, learned{})
}

// learned is what a request already heard from the catalog or inventory, for its view to reuse
// rather than ask again.
type learned struct {
	variants map[string]*catalogv1.Variant // by SKU; the cart's other SKUs are looked up
	store    *inventoryv1.Store            // the pickup store, when the request looked it up
}

// viewWith is view reusing what the request learned.
func (s *Service) viewWith(ctx context.Context, c *cartRow, l learned) *cartv1.Cart {
	var (
		variants  = make(map[string]*catalogv1.Variant, len(c.Lines))
		missing   []string
		fetched   map[string]*catalogv1.Variant
		available map[string]int32
		storeName string
		asks      []func()
	)
	for _, line := range c.Lines {
		if c.State == stateCheckedOut {
			break // shown as its order has it (linesOf), not as the catalog has it today
		}
		if v, ok := l.variants[line.SKU]; ok {
			variants[line.SKU] = v
		} else if v, ok := s.variantCache.get(line.SKU); ok {
			variants[line.SKU] = v
		} else {
			missing = append(missing, line.SKU)
		}
	}
	if len(missing) > 0 {
		asks = append(asks, func() {
			vs, err := s.askVariants(ctx, missing)
			if err != nil {
				s.log.DebugContext(ctx, "catalog did not price the cart; showing the last known prices", "cart_id", c.ID, "err", err)
				return
			}
			fetched = vs
		})
	}
	if c.StoreID != nil {
		// Availability is live, and asked only where it is shown: not on a checked-out cart.
		if len(c.Lines) > 0 && c.State == stateOpen {
			asks = append(asks, func() { available = s.availability(ctx, *c.StoreID, c.skus()) })
		}
		if l.store != nil && l.store.GetId() == *c.StoreID {
			storeName = l.store.GetName()
		} else if st, ok := s.storeCache.get(*c.StoreID); ok {
			storeName = st.GetName()
		} else {
			asks = append(asks, func() {
				st, err := s.store(ctx, *c.StoreID)
				if err != nil {
					s.log.DebugContext(ctx, "inventory did not name the pickup store", "store_id", *c.StoreID, "err", err)
					return
				}
				storeName = st.GetName()
			})
		}
	}
	askAll(asks)
	maps.Copy(variants, fetched)

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

// askAll runs a view's questions to other services, side by side when there are several.
func askAll(asks []func()) {
	switch len(asks) {
	case 0:
	case 1:
		asks[0]()
	default:
		var wg sync.WaitGroup
		for _, ask := range asks {
			wg.Go(ask)
		}
		wg.Wait()
	}
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
