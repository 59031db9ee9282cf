package gateway

import (
	"context"

	"connectrpc.com/connect"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/proto/handoff/inventory/v1/inventoryv1connect"
)

// locatorProxy serves StoreLocatorService at the edge; open to anonymous callers.
type locatorProxy struct {
	inventoryv1connect.UnimplementedStoreLocatorServiceHandler
	c inventoryv1.StoreLocatorServiceClient
}

func (p locatorProxy) FindStores(ctx context.Context, req *connect.Request[inventoryv1.FindStoresRequest]) (*connect.Response[inventoryv1.FindStoresResponse], error) {
	return forward(ctx, req, p.c.FindStores)
}

func (p locatorProxy) GetStore(ctx context.Context, req *connect.Request[inventoryv1.GetStoreRequest]) (*connect.Response[inventoryv1.GetStoreResponse], error) {
	return forward(ctx, req, p.c.GetStore)
}

func (p locatorProxy) GetAvailability(ctx context.Context, req *connect.Request[inventoryv1.GetAvailabilityRequest]) (*connect.Response[inventoryv1.GetAvailabilityResponse], error) {
	return forward(ctx, req, p.c.GetAvailability)
}
