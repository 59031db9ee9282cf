package gateway

import (
	"context"

	"connectrpc.com/connect"

	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
)

// catalogProxy serves CatalogService at the edge. Catalog reads are open to anonymous callers.
type catalogProxy struct {
	catalogv1connect.UnimplementedCatalogServiceHandler
	c catalogv1.CatalogServiceClient
}

func (p catalogProxy) ListProducts(ctx context.Context, req *connect.Request[catalogv1.ListProductsRequest]) (*connect.Response[catalogv1.ListProductsResponse], error) {
	return forward(ctx, req, p.c.ListProducts)
}

func (p catalogProxy) GetProduct(ctx context.Context, req *connect.Request[catalogv1.GetProductRequest]) (*connect.Response[catalogv1.GetProductResponse], error) {
	return forward(ctx, req, p.c.GetProduct)
}

func (p catalogProxy) BatchGetProducts(ctx context.Context, req *connect.Request[catalogv1.BatchGetProductsRequest]) (*connect.Response[catalogv1.BatchGetProductsResponse], error) {
	return forward(ctx, req, p.c.BatchGetProducts)
}

func (p catalogProxy) BatchGetVariants(ctx context.Context, req *connect.Request[catalogv1.BatchGetVariantsRequest]) (*connect.Response[catalogv1.BatchGetVariantsResponse], error) {
	return forward(ctx, req, p.c.BatchGetVariants)
}

func (p catalogProxy) ListCategories(ctx context.Context, req *connect.Request[catalogv1.ListCategoriesRequest]) (*connect.Response[catalogv1.ListCategoriesResponse], error) {
	return forward(ctx, req, p.c.ListCategories)
}
