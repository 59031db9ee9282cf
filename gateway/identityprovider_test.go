package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/auth/authtest"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// A retailer's shoppers and staff sign in with its own identity provider: their tokens order
// through the gateway over gRPC-web and act at the store through the pos-adapter, as Handoff's
// own do, and the services behind, which verify the forwarded token again, take them too.
func TestTokensOfTheRetailersIdentityProviderWorkEndToEnd(t *testing.T) {
	idp := authtest.New(t)
	ready := stacktest.Start(t, func(c *stack.Config) { c.IdentityProvider = idp.Config() })
	base := "http://" + ready.GatewayAddr
	shopper := idp.Sign("es-1", authtest.Customer("auth0|64f1c2"))
	opts := []connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(bearer(shopper))}
	cart := cartv1connect.NewCartServiceClient(http.DefaultClient, base, opts...)
	orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, base, opts...)

	created, err := cart.CreateCart(t.Context(), connect.NewRequest(&cartv1.CreateCartRequest{
		Lines: []*cartv1.NewCartLine{{Sku: "CROISSANT", Quantity: 1}},
		Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
			Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 25000,
		}}},
	}))
	if err != nil {
		t.Fatalf("CreateCart with the provider's customer token: %v", err)
	}
	placed, err := cart.Checkout(t.Context(), connect.NewRequest(&cartv1.CheckoutRequest{CartId: created.Msg.GetCart().GetId(), IdempotencyKey: "idp-order-1"}))
	if err != nil {
		t.Fatalf("Checkout with the provider's customer token: %v", err)
	}
	order := placed.Msg.GetOrder()
	if order.GetCustomerId() != "auth0|64f1c2" || order.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("order %v; want it CONFIRMED for the provider's subject", order)
	}
	listed, err := orders.ListOrders(t.Context(), connect.NewRequest(&fulfilmentv1.ListOrdersRequest{}))
	if err != nil || len(listed.Msg.GetOrders()) != 1 {
		t.Fatalf("ListOrders: %v, %v; want the one order", listed, err)
	}

	// Staff of the order's store accept it at the pos-adapter; staff of another store may not.
	pos := func(tok string) posv1connect.TerminalServiceClient {
		return posv1connect.NewTerminalServiceClient(http.DefaultClient, "http://"+ready.POSAdapterAddr, connect.WithInterceptors(bearer(tok)))
	}
	other := "sea-capitol-hill-01"
	if order.GetStoreId() == other {
		other = "sea-ballard-01"
	}
	_, err = pos(idp.Sign("rs-1", authtest.Staff("till-9", other))).AcceptOrder(t.Context(), connect.NewRequest(&posv1.AcceptOrderRequest{StoreId: order.GetStoreId(), OrderId: order.GetId()}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("AcceptOrder by another store's staff: %v; want PermissionDenied", err)
	}
	accepted, err := pos(idp.Sign("rs-1", authtest.Staff("till-1", order.GetStoreId()))).AcceptOrder(t.Context(), connect.NewRequest(&posv1.AcceptOrderRequest{StoreId: order.GetStoreId(), OrderId: order.GetId()}))
	if err != nil || accepted.Msg.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_PREPARING {
		t.Fatalf("AcceptOrder by the store's staff: %v, %v; want PREPARING", accepted, err)
	}

	// The same provider's token for another of the retailer's APIs is refused, saying why, and
	// changes nothing.
	elsewhere := authtest.Customer("auth0|64f1c2")
	elsewhere.Audience = []string{"https://payments.retailer.example"}
	wrong := cartv1connect.NewCartServiceClient(http.DefaultClient, base, connect.WithGRPCWeb(), connect.WithInterceptors(bearer(idp.Sign("es-1", elsewhere))))
	_, err = wrong.CreateCart(t.Context(), connect.NewRequest(&cartv1.CreateCartRequest{}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "audience (aud)") {
		t.Fatalf("CreateCart with another API's token: %v; want Unauthenticated naming the audience", err)
	}
	listed, err = orders.ListOrders(t.Context(), connect.NewRequest(&fulfilmentv1.ListOrdersRequest{}))
	if err != nil || len(listed.Msg.GetOrders()) != 1 {
		t.Fatalf("ListOrders after the refusal: %v, %v; want still the one order", listed, err)
	}
}
