package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/demo"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

// LoadDemo fills an empty catalog with the demo chain's categories and products, through the
// same validated path as the admin API (so demo data obeys every rule and publishes its
// events). A catalog that has any category already is left alone.
func (s *Service) LoadDemo(ctx context.Context, chain demo.Chain) (loaded bool, err error) {
	// One transaction: a crash mid-load leaves an empty catalog, loaded again at the next
	// start. The advisory lock makes a second copy starting at once wait, then find it full.
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.demo'))`); err != nil {
			return fmt.Errorf("lock demo load: %w", err)
		}
		var empty bool
		if err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM categories)`).Scan(&empty); err != nil {
			return fmt.Errorf("check catalog is empty: %w", err)
		}
		if !empty {
			return nil
		}
		// Parents before children, as the demo lists them.
		for i, c := range chain.Categories {
			if _, err := createCategory(ctx, tx, &catalogv1.Category{Id: c.ID, Slug: c.Slug, Name: c.Name, ParentId: c.ParentID, Position: int32(i)}); err != nil {
				return fmt.Errorf("demo category %s: %w", c.ID, err)
			}
		}
		for _, p := range chain.Products {
			pb := &catalogv1.Product{Id: p.ID, Name: p.Name, Description: p.Description, CategoryId: p.CategoryID, Tags: p.Tags}
			for _, u := range p.ImageURLs {
				pb.Images = append(pb.Images, &catalogv1.Image{Url: u, AltText: p.Name})
			}
			for _, v := range p.Variants {
				pb.Variants = append(pb.Variants, &catalogv1.Variant{Sku: v.SKU, Name: v.Name, Price: &commonv1.Money{AmountMinor: v.PriceMinor, CurrencyCode: v.Currency}})
			}
			if _, err := s.createProduct(ctx, tx, pb); err != nil {
				return fmt.Errorf("demo product %s: %w", p.ID, err)
			}
		}
		loaded = true
		return nil
	})
	if err != nil {
		return false, err
	}
	if loaded {
		s.log.Info("demo catalog loaded", "categories", len(chain.Categories), "products", len(chain.Products))
	}
	return loaded, nil
}

// OwnData reports whether the catalog has categories or products other than chain's.
func (s *Service) OwnData(ctx context.Context, chain demo.Chain) (bool, error) {
	var categories, products []string
	for _, c := range chain.Categories {
		categories = append(categories, c.ID)
	}
	for _, p := range chain.Products {
		products = append(products, p.ID)
	}
	var own bool
	err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM categories WHERE id <> ALL($1))
		OR EXISTS (SELECT 1 FROM products WHERE id <> ALL($2))`, categories, products).Scan(&own)
	if err != nil {
		return false, fmt.Errorf("look for data other than the demo's: %w", err)
	}
	return own, nil
}
