package catalog

import (
	"context"

	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
)

// SubjectBatchGetVariants is the NATS request/reply subject carts price their lines with.
var SubjectBatchGetVariants = natsrpc.Subject("catalog", "batch_get_variants")

// RegisterGRPC serves the shopper-facing and the admin API on srv.
func (s *Service) RegisterGRPC(srv grpc.ServiceRegistrar) {
	catalogv1.RegisterCatalogServiceServer(srv, publicAPI{s: s})
	catalogv1.RegisterCatalogAdminServiceServer(srv, adminAPI{s: s})
}

// RegisterNATS serves the internal request/reply endpoints on svc.
func (s *Service) RegisterNATS(svc *natsrpc.Service) error {
	return natsrpc.Handle(svc, SubjectBatchGetVariants, func(ctx context.Context, req *catalogv1.BatchGetVariantsRequest) (*catalogv1.BatchGetVariantsResponse, error) {
		variants, err := s.BatchGetVariants(ctx, req.GetSkus())
		if err != nil {
			return nil, err
		}
		return &catalogv1.BatchGetVariantsResponse{Variants: variants}, nil
	})
}

// publicAPI is CatalogService: reads only, safe for anonymous callers.
type publicAPI struct {
	catalogv1.UnimplementedCatalogServiceServer
	s *Service
}

func (a publicAPI) ListProducts(ctx context.Context, req *catalogv1.ListProductsRequest) (*catalogv1.ListProductsResponse, error) {
	// Archived products are for operators only.
	if p, ok := auth.FromContext(ctx); !ok || p.Role != auth.RoleAdmin {
		req.IncludeArchived = false
	}
	return a.s.ListProducts(ctx, req)
}

func (a publicAPI) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	p, err := a.s.GetProduct(ctx, req.GetProductId())
	if err != nil {
		return nil, err
	}
	return &catalogv1.GetProductResponse{Product: p}, nil
}

func (a publicAPI) BatchGetProducts(ctx context.Context, req *catalogv1.BatchGetProductsRequest) (*catalogv1.BatchGetProductsResponse, error) {
	ps, err := a.s.BatchGetProducts(ctx, req.GetProductIds())
	if err != nil {
		return nil, err
	}
	return &catalogv1.BatchGetProductsResponse{Products: ps}, nil
}

func (a publicAPI) BatchGetVariants(ctx context.Context, req *catalogv1.BatchGetVariantsRequest) (*catalogv1.BatchGetVariantsResponse, error) {
	vs, err := a.s.BatchGetVariants(ctx, req.GetSkus())
	if err != nil {
		return nil, err
	}
	return &catalogv1.BatchGetVariantsResponse{Variants: vs}, nil
}

func (a publicAPI) ListCategories(ctx context.Context, _ *catalogv1.ListCategoriesRequest) (*catalogv1.ListCategoriesResponse, error) {
	cs, err := a.s.ListCategories(ctx)
	if err != nil {
		return nil, err
	}
	return &catalogv1.ListCategoriesResponse{Categories: cs}, nil
}

// adminAPI is CatalogAdminService.
type adminAPI struct {
	catalogv1.UnimplementedCatalogAdminServiceServer
	s *Service
}

func (a adminAPI) CreateProduct(ctx context.Context, req *catalogv1.CreateProductRequest) (*catalogv1.CreateProductResponse, error) {
	p, err := a.s.CreateProduct(ctx, req.GetProduct())
	if err != nil {
		return nil, err
	}
	return &catalogv1.CreateProductResponse{Product: p}, nil
}

func (a adminAPI) UpdateProduct(ctx context.Context, req *catalogv1.UpdateProductRequest) (*catalogv1.UpdateProductResponse, error) {
	p, err := a.s.UpdateProduct(ctx, req.GetProduct(), req.GetUpdateMask().GetPaths(), req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	return &catalogv1.UpdateProductResponse{Product: p}, nil
}

func (a adminAPI) ArchiveProduct(ctx context.Context, req *catalogv1.ArchiveProductRequest) (*catalogv1.ArchiveProductResponse, error) {
	p, err := a.s.ArchiveProduct(ctx, req.GetProductId())
	if err != nil {
		return nil, err
	}
	return &catalogv1.ArchiveProductResponse{Product: p}, nil
}

func (a adminAPI) CreateCategory(ctx context.Context, req *catalogv1.CreateCategoryRequest) (*catalogv1.CreateCategoryResponse, error) {
	c, err := a.s.CreateCategory(ctx, req.GetCategory())
	if err != nil {
		return nil, err
	}
	return &catalogv1.CreateCategoryResponse{Category: c}, nil
}
