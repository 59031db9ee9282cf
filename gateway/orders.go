package gateway

import (
	"context"

	"connectrpc.com/connect"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

// orderProxy serves OrderService at the edge; customer token required, and fulfilment shows a
// customer only their own orders.
type orderProxy struct {
	fulfilmentv1connect.UnimplementedOrderServiceHandler
	c fulfilmentv1.OrderServiceClient
}

func (p orderProxy) GetOrder(ctx context.Context, req *connect.Request[fulfilmentv1.GetOrderRequest]) (*connect.Response[fulfilmentv1.GetOrderResponse], error) {
	return forward(ctx, req, p.c.GetOrder)
}

func (p orderProxy) ListOrders(ctx context.Context, req *connect.Request[fulfilmentv1.ListOrdersRequest]) (*connect.Response[fulfilmentv1.ListOrdersResponse], error) {
	return forward(ctx, req, p.c.ListOrders)
}

func (p orderProxy) WatchOrder(ctx context.Context, req *connect.Request[fulfilmentv1.WatchOrderRequest], stream *connect.ServerStream[fulfilmentv1.WatchOrderResponse]) error {
	return forwardStream(ctx, req, stream, p.c.WatchOrder)
}

func (p orderProxy) CancelOrder(ctx context.Context, req *connect.Request[fulfilmentv1.CancelOrderRequest]) (*connect.Response[fulfilmentv1.CancelOrderResponse], error) {
	return forward(ctx, req, p.c.CancelOrder)
}

func (p orderProxy) CheckIn(ctx context.Context, req *connect.Request[fulfilmentv1.CheckInRequest]) (*connect.Response[fulfilmentv1.CheckInResponse], error) {
	return forward(ctx, req, p.c.CheckIn)
}
