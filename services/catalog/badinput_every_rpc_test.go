package catalog_test

// DESIGN.md invariant 7 (bad input gets a clear error naming the field, and changes nothing),
// every field of every RPC of CatalogService and CatalogAdminService.

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/handoff-dev/handoff/internal/testenv"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

func TestEveryCatalogRPCRefusesBadInputNamingTheField(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	ctx := t.Context()
	if _, err := e.admin.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: validProduct()}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 100_000)

	create := func(mut func(*catalogv1.Product)) func() error {
		return func() error {
			p := validProduct()
			p.Id = "prd-audit"
			p.Variants[0].Sku, p.Variants[1].Sku = "AUDIT-1", "AUDIT-2"
			mut(p)
			_, err := e.admin.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: p})
			return err
		}
	}
	update := func(mask []string, ev int64, mut func(*catalogv1.Product)) func() error {
		return func() error {
			p := validProduct()
			mut(p)
			r := &catalogv1.UpdateProductRequest{Product: p, ExpectedVersion: ev}
			if mask != nil {
				r.UpdateMask = &fieldmaskpb.FieldMask{Paths: mask}
			}
			_, err := e.admin.UpdateProduct(ctx, r)
			return err
		}
	}
	category := func(c *catalogv1.Category) func() error {
		return func() error {
			_, err := e.admin.CreateCategory(ctx, &catalogv1.CreateCategoryRequest{Category: c})
			return err
		}
	}
	tests := []testenv.Refusal{
		{Name: "CreateProduct nil", Do: func() error { _, err := e.admin.CreateProduct(ctx, &catalogv1.CreateProductRequest{}); return err }, Code: codes.InvalidArgument, Field: "product.name"},
		{Name: "CreateProduct description long", Do: create(func(p *catalogv1.Product) { p.Description = long }), Code: codes.InvalidArgument, Field: "product.description"},
		{Name: "CreateProduct category blank", Do: create(func(p *catalogv1.Product) { p.CategoryId = "   " }), Code: codes.InvalidArgument, Field: "product.category_id"},
		{Name: "CreateProduct category 100k", Do: create(func(p *catalogv1.Product) { p.CategoryId = long }), Code: codes.InvalidArgument, Field: "product.category_id"},
		{Name: "CreateProduct 11 images", Do: create(func(p *catalogv1.Product) {
			for len(p.Images) < 11 {
				p.Images = append(p.Images, p.Images[0])
			}
		}), Code: codes.InvalidArgument, Field: "product.images"},
		{Name: "CreateProduct nil image", Do: create(func(p *catalogv1.Product) { p.Images = append(p.Images, nil) }), Code: codes.InvalidArgument, Field: "product.images[1].url"},
		{Name: "CreateProduct 21 tags", Do: create(func(p *catalogv1.Product) {
			for len(p.Tags) < 21 {
				p.Tags = append(p.Tags, "t")
			}
		}), Code: codes.InvalidArgument, Field: "product.tags"},
		{Name: "CreateProduct blank tag", Do: create(func(p *catalogv1.Product) { p.Tags = []string{"ok", " "} }), Code: codes.InvalidArgument, Field: "product.tags[1]"},
		{Name: "CreateProduct long tag", Do: create(func(p *catalogv1.Product) { p.Tags = []string{strings.Repeat("t", 41)} }), Code: codes.InvalidArgument, Field: "product.tags[0]"},
		{Name: "CreateProduct 51 variants", Do: create(func(p *catalogv1.Product) {
			p.Variants = nil
			for i := range 51 {
				p.Variants = append(p.Variants, &catalogv1.Variant{Sku: fmt.Sprintf("AV-%d", i), Name: "v", Price: &commonv1.Money{AmountMinor: 1, CurrencyCode: "USD"}})
			}
		}), Code: codes.InvalidArgument, Field: "product.variants"},
		{Name: "CreateProduct nil variant", Do: create(func(p *catalogv1.Product) { p.Variants = append(p.Variants, nil) }), Code: codes.InvalidArgument, Field: "product.variants[2].sku"},
		{Name: "CreateProduct variant blank name", Do: create(func(p *catalogv1.Product) { p.Variants[0].Name = "  " }), Code: codes.InvalidArgument, Field: "product.variants[0].name"},
		{Name: "CreateProduct price MaxInt64", Do: create(func(p *catalogv1.Product) { p.Variants[0].Price.AmountMinor = math.MaxInt64 }), Code: codes.InvalidArgument, Field: "product.variants[0].price.amount_minor"},
		{Name: "CreateProduct price MinInt64", Do: create(func(p *catalogv1.Product) { p.Variants[0].Price.AmountMinor = math.MinInt64 }), Code: codes.InvalidArgument, Field: "product.variants[0].price.amount_minor"},
		{Name: "CreateProduct currency empty", Do: create(func(p *catalogv1.Product) { p.Variants[0].Price.CurrencyCode = "" }), Code: codes.InvalidArgument, Field: "product.variants[0].price.currency_code"},
		{Name: "CreateProduct sku of other product", Do: create(func(p *catalogv1.Product) { p.Variants[1].Sku = "TEST-BREW-12" }), Code: codes.InvalidArgument, Field: "product.variants[1].sku"},
		{Name: "CreateProduct existing id", Do: create(func(p *catalogv1.Product) { p.Id = "prd-test-brew" }), Code: codes.AlreadyExists, Field: "prd-test-brew"},
		{Name: "CreateProduct id 65", Do: create(func(p *catalogv1.Product) { p.Id = strings.Repeat("a", 65) }), Code: codes.InvalidArgument, Field: "product.id"},
		{Name: "CreateProduct image url 100k", Do: create(func(p *catalogv1.Product) { p.Images[0].Url = "https://x.example.com/" + long }), Code: codes.InvalidArgument, Field: "product.images[0].url"},
		{Name: "CreateProduct image javascript:", Do: create(func(p *catalogv1.Product) { p.Images[0].Url = "javascript:alert(1)" }), Code: codes.InvalidArgument, Field: "product.images[0].url"},
		{Name: "CreateProduct image url with newline", Do: create(func(p *catalogv1.Product) { p.Images[0].Url = "https://x.example.com/a\nb" }), Code: codes.InvalidArgument, Field: "product.images[0].url"},
		// UpdateProduct
		{Name: "UpdateProduct nil", Do: func() error { _, err := e.admin.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{}); return err }, Code: codes.InvalidArgument, Field: "product.id"},
		{Name: "UpdateProduct unknown", Do: update(nil, 0, func(p *catalogv1.Product) { p.Id = "prd-nope" }), Code: codes.NotFound, Field: "prd-nope"},
		{Name: "UpdateProduct mask id", Do: update([]string{"id"}, 0, func(p *catalogv1.Product) {}), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateProduct mask status", Do: update([]string{"status"}, 0, func(p *catalogv1.Product) { p.Status = catalogv1.ProductStatus_PRODUCT_STATUS_ARCHIVED }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateProduct mask version", Do: update([]string{"version"}, 0, func(p *catalogv1.Product) { p.Version = 7 }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateProduct mask nested", Do: update([]string{"variants.price"}, 0, func(p *catalogv1.Product) {}), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateProduct mask unknown", Do: update([]string{"name", "colour"}, 0, func(p *catalogv1.Product) { p.Name = "X" }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateProduct mask NUL path", Do: update([]string{"na\x00me"}, 0, func(p *catalogv1.Product) { p.Name = "X" }), Code: codes.InvalidArgument, Field: "update_mask"},
		{Name: "UpdateProduct name cleared", Do: update([]string{"name"}, 0, func(p *catalogv1.Product) { p.Name = "" }), Code: codes.InvalidArgument, Field: "product.name"},
		{Name: "UpdateProduct variants cleared", Do: update([]string{"variants"}, 0, func(p *catalogv1.Product) { p.Variants = nil }), Code: codes.InvalidArgument, Field: "product.variants"},
		{Name: "UpdateProduct category unknown", Do: update([]string{"category_id"}, 0, func(p *catalogv1.Product) { p.CategoryId = "cat-nope" }), Code: codes.InvalidArgument, Field: "product.category_id"},
		{Name: "UpdateProduct expected_version -1", Do: update(nil, -1, func(p *catalogv1.Product) { p.Name = "Y" }), Code: codes.InvalidArgument, Field: "expected_version"},
		{Name: "UpdateProduct stale", Do: update([]string{"name"}, 99, func(p *catalogv1.Product) { p.Name = "Y" }), Code: codes.Aborted, Field: "expected_version"},
		// ArchiveProduct
		{Name: "ArchiveProduct empty", Do: func() error { _, err := e.admin.ArchiveProduct(ctx, &catalogv1.ArchiveProductRequest{}); return err }, Code: codes.InvalidArgument, Field: "product_id"},
		{Name: "ArchiveProduct unknown", Do: func() error {
			_, err := e.admin.ArchiveProduct(ctx, &catalogv1.ArchiveProductRequest{ProductId: long})
			return err
		}, Code: codes.NotFound, Field: "product"},
		// CreateCategory
		{Name: "CreateCategory nil", Do: category(nil), Code: codes.InvalidArgument, Field: "category.slug"},
		{Name: "CreateCategory blank name", Do: category(&catalogv1.Category{Slug: "s", Name: " "}), Code: codes.InvalidArgument, Field: "category.name"},
		{Name: "CreateCategory bad slug", Do: category(&catalogv1.Category{Slug: "Bad Slug", Name: "n"}), Code: codes.InvalidArgument, Field: "category.slug"},
		{Name: "CreateCategory bad id", Do: category(&catalogv1.Category{Id: "Bad", Slug: "s", Name: "n"}), Code: codes.InvalidArgument, Field: "category.id"},
		{Name: "CreateCategory unknown parent", Do: category(&catalogv1.Category{Slug: "s2", Name: "n", ParentId: "cat-nope"}), Code: codes.InvalidArgument, Field: "category.parent_id"},
		{Name: "CreateCategory parent 100k", Do: category(&catalogv1.Category{Slug: "s3", Name: "n", ParentId: long}), Code: codes.InvalidArgument, Field: "category.parent_id"},
		{Name: "CreateCategory existing", Do: category(&catalogv1.Category{Id: "cat-test", Slug: "test", Name: "n"}), Code: codes.AlreadyExists, Field: "cat-test"},
		{Name: "CreateCategory existing slug new id", Do: category(&catalogv1.Category{Id: "cat-other", Slug: "test", Name: "n"}), Code: codes.AlreadyExists, Field: "test"},
		// CatalogService
		{Name: "ListProducts page_size -1", Do: func() error {
			_, err := e.public.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: -1})
			return err
		}, Code: codes.InvalidArgument, Field: "page_size"},
		{Name: "ListProducts query 501", Do: func() error {
			_, err := e.public.ListProducts(ctx, &catalogv1.ListProductsRequest{Query: strings.Repeat("a ", 251)})
			return err
		}, Code: codes.InvalidArgument, Field: "query"},
		{Name: "ListProducts garbage token", Do: func() error {
			_, err := e.public.ListProducts(ctx, &catalogv1.ListProductsRequest{PageToken: "abc"})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "GetProduct empty", Do: func() error { _, err := e.public.GetProduct(ctx, &catalogv1.GetProductRequest{}); return err }, Code: codes.InvalidArgument, Field: "product_id"},
		{Name: "BatchGetProducts none", Do: func() error {
			_, err := e.public.BatchGetProducts(ctx, &catalogv1.BatchGetProductsRequest{})
			return err
		}, Code: codes.InvalidArgument, Field: "product_ids"},
		{Name: "BatchGetProducts 101", Do: func() error {
			_, err := e.public.BatchGetProducts(ctx, &catalogv1.BatchGetProductsRequest{ProductIds: make([]string, 101)})
			return err
		}, Code: codes.InvalidArgument, Field: "product_ids"},
		{Name: "BatchGetProducts empty id", Do: func() error {
			_, err := e.public.BatchGetProducts(ctx, &catalogv1.BatchGetProductsRequest{ProductIds: []string{"prd-test-brew", ""}})
			return err
		}, Code: codes.InvalidArgument, Field: "product_ids[1]"},
		{Name: "BatchGetVariants 201", Do: func() error {
			s := make([]string, 201)
			for i := range s {
				s[i] = "X"
			}
			_, err := e.public.BatchGetVariants(ctx, &catalogv1.BatchGetVariantsRequest{Skus: s})
			return err
		}, Code: codes.InvalidArgument, Field: "skus"},
		{Name: "BatchGetVariants unknown", Do: func() error {
			_, err := e.public.BatchGetVariants(ctx, &catalogv1.BatchGetVariantsRequest{Skus: []string{"TEST-BREW-12", "NOPE"}})
			return err
		}, Code: codes.NotFound, Field: "NOPE"},
	}
	count := func() string {
		var s string
		if err := e.pool.QueryRow(ctx, `SELECT format('%s products v%s, %s variants, %s categories',
			(SELECT count(*) FROM products), (SELECT sum(version) FROM products), (SELECT count(*) FROM variants),
			(SELECT count(*) FROM categories))`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := count()
	testenv.RefusedEach(t, tests)
	if after := count(); after != before {
		t.Errorf("refused requests changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
}
