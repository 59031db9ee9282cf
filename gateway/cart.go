package gateway

import (
	"context"

	"connectrpc.com/connect"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
)

// cartProxy serves CartService at the edge; customer token required (checked by the
// interceptor here and again by the cart service, which also checks ownership).
type cartProxy struct {
	cartv1connect.UnimplementedCartServiceHandler
	c cartv1.CartServiceClient
}

func (p cartProxy) CreateCart(ctx context.Context, req *connect.Request[cartv1.CreateCartRequest]) (*connect.Response[cartv1.CreateCartResponse], error) {
	return forward(ctx, req, p.c.CreateCart)
}

func (p cartProxy) GetCart(ctx context.Context, req *connect.Request[cartv1.GetCartRequest]) (*connect.Response[cartv1.GetCartResponse], error) {
	return forward(ctx, req, p.c.GetCart)
}

func (p cartProxy) AddLine(ctx context.Context, req *connect.Request[cartv1.AddLineRequest]) (*connect.Response[cartv1.AddLineResponse], error) {
	return forward(ctx, req, p.c.AddLine)
}

func (p cartProxy) UpdateLine(ctx context.Context, req *connect.Request[cartv1.UpdateLineRequest]) (*connect.Response[cartv1.UpdateLineResponse], error) {
	return forward(ctx, req, p.c.UpdateLine)
}

func (p cartProxy) RemoveLine(ctx context.Context, req *connect.Request[cartv1.RemoveLineRequest]) (*connect.Response[cartv1.RemoveLineResponse], error) {
	return forward(ctx, req, p.c.RemoveLine)
}

func (p cartProxy) ClearCart(ctx context.Context, req *connect.Request[cartv1.ClearCartRequest]) (*connect.Response[cartv1.ClearCartResponse], error) {
	return forward(ctx, req, p.c.ClearCart)
}

func (p cartProxy) SetPickup(ctx context.Context, req *connect.Request[cartv1.SetPickupRequest]) (*connect.Response[cartv1.SetPickupResponse], error) {
	return forward(ctx, req, p.c.SetPickup)
}

func (p cartProxy) Checkout(ctx context.Context, req *connect.Request[cartv1.CheckoutRequest]) (*connect.Response[cartv1.CheckoutResponse], error) {
	return forward(ctx, req, p.c.Checkout)
}
