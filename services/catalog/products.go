package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/text/unicode/norm"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/fieldmask"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/streams"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

// Event subjects the catalog publishes (through the outbox).
var (
	// SubjectProductCreated carries ProductCreated.
	SubjectProductCreated = streams.EventSubject("catalog", "product", "created")
	// SubjectProductUpdated carries ProductUpdated.
	SubjectProductUpdated = streams.EventSubject("catalog", "product", "updated")
	// SubjectProductArchived carries ProductArchived.
	SubjectProductArchived = streams.EventSubject("catalog", "product", "archived")
	// SubjectCategoryCreated carries CategoryCreated.
	SubjectCategoryCreated = streams.EventSubject("catalog", "category", "created")
)

const productColumns = `id, name, description, category_id, images, tags, archived, version, create_time, update_time`

// listPosition is the keyset position of ListProducts pages.
type listPosition struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

// ListProducts pages through products by name.
func (s *Service) ListProducts(ctx context.Context, req *catalogv1.ListProductsRequest) (*catalogv1.ListProductsResponse, error) {
	size, err := pagetoken.PageSize(req.GetPageSize(), 20, 100)
	if err != nil {
		return nil, err
	}
	var after listPosition
	hasAfter, err := pagetoken.Decode(req, &after)
	if err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if !req.GetIncludeArchived() {
		where = append(where, "NOT archived")
	}
	if c := req.GetCategoryId(); c != "" {
		// A parent category lists its children's products too.
		where = append(where, `category_id IN (
			WITH RECURSIVE tree AS (
				SELECT id FROM categories WHERE id = `+arg(c)+`
				UNION SELECT c.id FROM categories c JOIN tree t ON c.parent_id = t.id)
			SELECT id FROM tree)`)
	}
	if n := utf8.RuneCountInString(req.GetQuery()); n > maxQueryChars {
		// Only the first words are searched, and Postgres cannot even split a text over 1 MB.
		return nil, rpcerr.Invalid("query", fmt.Sprintf("%d characters: at most %d", n, maxQueryChars))
	}
	if q := req.GetQuery(); searchWord.MatchString(q) {
		where = append(where, "search @@ "+searchQuerySQL(arg(searchForm(q))))
	} else if strings.TrimSpace(q) != "" {
		return &catalogv1.ListProductsResponse{}, nil // nothing searchable in the query
	}
	if hasAfter {
		where = append(where, "(name, id) > ("+arg(after.Name)+", "+arg(after.ID)+")")
	}
	sql := "SELECT " + productColumns + " FROM products"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY name, id LIMIT " + arg(size+1)

	products, err := s.queryProducts(ctx, s.db, sql, args...)
	if err != nil {
		return nil, err
	}
	res := &catalogv1.ListProductsResponse{Products: products}
	if len(products) > size {
		res.Products = products[:size]
		last := res.Products[size-1]
		res.NextPageToken = pagetoken.Encode(req, listPosition{Name: last.GetName(), ID: last.GetId()})
	}
	return res, nil
}

// searchWord finds a letter or digit: a query without one has nothing to search for.
var searchWord = regexp.MustCompile(`[\p{L}\p{N}]`)

// maxSearchWords bounds the words of a query searched for (the first ones typed).
const maxSearchWords = 16

// maxQueryChars bounds a search text: far more than maxSearchWords words take.
const maxQueryChars = 500

// searchQuerySQL is the prefix-matching tsquery of the free text in param ("oat lat" finds
// "Oat Milk Latte"). Its words are split by the parser that split the stored text
// (to_tsvector 'simple'), so that whatever a product shows can be typed back: "2.5", "1.5L",
// "LATTE-16" are words to it that a split of our own would break ("2" and "5" match no
// word). Each is quoted as a tsquery lexeme, so nothing typed is tsquery syntax. Both sides
// are lower-cased by the service (searchText), not by Postgres: in a database whose ctype is C
// (the one-process mode's own cluster) Postgres lower-cases ASCII only.
func searchQuerySQL(param string) string {
	return `(SELECT string_agg('''' || replace(replace(w.lexeme, '\', '\\'), '''', '''''') || ''':*', ' & ')::tsquery
		FROM (SELECT lexeme FROM unnest(to_tsvector('simple', ` + param + `::text)) ORDER BY positions[1]
			LIMIT ` + strconv.Itoa(maxSearchWords) + `) w)`
}

// GetProduct returns one product, archived or not (old orders still link to it).
func (s *Service) GetProduct(ctx context.Context, id string) (*catalogv1.Product, error) {
	if id == "" {
		return nil, rpcerr.Invalid("product_id", "required")
	}
	ps, err := s.queryProducts(ctx, s.db, "SELECT "+productColumns+" FROM products WHERE id = $1", id)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, rpcerr.NotFound("product", id)
	}
	return ps[0], nil
}

// BatchGetProducts returns products in request order; an unknown id is NotFound.
func (s *Service) BatchGetProducts(ctx context.Context, ids []string) ([]*catalogv1.Product, error) {
	if err := checkBatch("product_ids", ids, 100); err != nil {
		return nil, err
	}
	ps, err := s.queryProducts(ctx, s.db, "SELECT "+productColumns+" FROM products WHERE id = ANY($1)", ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*catalogv1.Product, len(ps))
	for _, p := range ps {
		byID[p.GetId()] = p
	}
	out := make([]*catalogv1.Product, 0, len(ids))
	for _, id := range ids {
		p, ok := byID[id]
		if !ok {
			return nil, rpcerr.NotFound("product", id)
		}
		out = append(out, p)
	}
	return out, nil
}

// BatchGetVariants looks SKUs up in request order, duplicates answered once; an unknown SKU is
// NotFound naming it. Archived products' variants, and variants an update retired, are returned
// with orderable=false so the caller decides (a cart refuses them; an order history shows them).
func (s *Service) BatchGetVariants(ctx context.Context, skus []string) ([]*catalogv1.Variant, error) {
	if err := checkBatch("skus", skus, 200); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `
		SELECT v.sku, v.product_id, p.name, v.name, v.price_minor, v.currency, v.available, p.archived OR v.retired
		FROM variants v JOIN products p ON p.id = v.product_id
		WHERE v.sku = ANY($1)`, skus)
	if err != nil {
		return nil, fmt.Errorf("query variants: %w", err)
	}
	bySKU := make(map[string]*catalogv1.Variant, len(skus))
	for rows.Next() {
		v := &catalogv1.Variant{Price: &commonv1.Money{}}
		var withdrawn, available bool
		if err := rows.Scan(&v.Sku, &v.ProductId, &v.ProductName, &v.Name, &v.Price.AmountMinor, &v.Price.CurrencyCode, &available, &withdrawn); err != nil {
			return nil, fmt.Errorf("scan variant: %w", err)
		}
		v.Available = &available
		v.Orderable = available && !withdrawn
		bySKU[v.GetSku()] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query variants: %w", err)
	}
	out := make([]*catalogv1.Variant, 0, len(skus))
	seen := make(map[string]bool, len(skus))
	for _, sku := range skus {
		if seen[sku] {
			continue
		}
		seen[sku] = true
		v, ok := bySKU[sku]
		if !ok {
			return nil, rpcerr.NotFound("sku", sku)
		}
		out = append(out, v)
	}
	return out, nil
}

func checkBatch(field string, ids []string, max int) error {
	switch {
	case len(ids) == 0:
		return rpcerr.Invalid(field, "at least one is required")
	case len(ids) > max:
		return rpcerr.Invalid(field, fmt.Sprintf("at most %d, got %d", max, len(ids)))
	}
	for i, id := range ids {
		if id == "" {
			return rpcerr.Invalid(fmt.Sprintf("%s[%d]", field, i), "must not be empty")
		}
	}
	return nil
}

// ListCategories returns every category for display.
func (s *Service) ListCategories(ctx context.Context) ([]*catalogv1.Category, error) {
	rows, err := s.db.Query(ctx, `SELECT id, slug, name, coalesce(parent_id, ''), position FROM categories
		ORDER BY parent_id NULLS FIRST, position, name`)
	if err != nil {
		return nil, fmt.Errorf("query categories: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*catalogv1.Category, error) {
		c := &catalogv1.Category{}
		return c, r.Scan(&c.Id, &c.Slug, &c.Name, &c.ParentId, &c.Position)
	})
}

// CreateCategory stores a new category.
func (s *Service) CreateCategory(ctx context.Context, c *catalogv1.Category) (*catalogv1.Category, error) {
	var out *catalogv1.Category
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) (err error) {
		out, err = createCategory(ctx, tx, c)
		return err
	})
	return out, err
}

func createCategory(ctx context.Context, tx pgx.Tx, c *catalogv1.Category) (*catalogv1.Category, error) {
	var v rpcerr.Violations
	validateCategory(c, &v)
	if err := v.Err(); err != nil {
		return nil, err
	}
	out := &catalogv1.Category{Id: c.GetId(), Slug: c.GetSlug(), Name: c.GetName(), ParentId: c.GetParentId(), Position: c.GetPosition()}
	if out.Id == "" {
		out.Id = defaultCategoryID(out.Slug)
	}
	if out.ParentId == out.Id {
		// The foreign key accepts a row naming itself; the tree would have a node no root reaches.
		return nil, rpcerr.Invalid("category.parent_id", fmt.Sprintf("%q is the category itself", out.ParentId))
	}
	_, err := tx.Exec(ctx, `INSERT INTO categories (id, slug, name, parent_id, position) VALUES ($1, $2, $3, NULLIF($4, ''), $5)`,
		out.Id, out.Slug, out.Name, out.ParentId, out.Position)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		return nil, rpcerr.AlreadyExists("category", out.Id+"/"+out.Slug)
	case errors.As(err, &pgErr) && pgErr.Code == "23503":
		return nil, rpcerr.Invalid("category.parent_id", fmt.Sprintf("category %q does not exist", out.ParentId))
	case err != nil:
		return nil, fmt.Errorf("insert category: %w", err)
	}
	if _, err := outbox.Enqueue(ctx, tx, SubjectCategoryCreated, &catalogv1.CategoryCreated{Category: out}); err != nil {
		return nil, err
	}
	return out, nil
}

// CreateProduct validates and stores a new product, publishing ProductCreated.
func (s *Service) CreateProduct(ctx context.Context, p *catalogv1.Product) (*catalogv1.Product, error) {
	var stored *catalogv1.Product
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) (err error) {
		stored, err = s.createProduct(ctx, tx, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// createProduct validates and inserts a product inside tx and enqueues ProductCreated.
func (s *Service) createProduct(ctx context.Context, tx pgx.Tx, p *catalogv1.Product) (*catalogv1.Product, error) {
	var v rpcerr.Violations
	s.validateProduct(p, "product", &v)
	if err := v.Err(); err != nil {
		return nil, err
	}
	p = cloneForWrite(p)
	if p.Id == "" {
		p.Id = "prd-" + uuid.Must(uuid.NewV7()).String()
	}
	var stored *catalogv1.Product
	err := func() error {
		if err := checkCategory(ctx, tx, p.GetCategoryId(), "product.category_id"); err != nil {
			return err
		}
		images, _ := json.Marshal(imagesJSON(p.GetImages()))
		_, err := tx.Exec(ctx, `INSERT INTO products (id, name, description, category_id, images, tags, search_text)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			p.Id, p.Name, p.Description, p.CategoryId, images, nonNil(p.Tags), searchText(p))
		if isUniqueViolation(err) {
			return rpcerr.AlreadyExists("product", p.Id)
		}
		if err != nil {
			return fmt.Errorf("insert product: %w", err)
		}
		if err := writeVariants(ctx, tx, p); err != nil {
			return err
		}
		if stored, err = s.loadForUpdate(ctx, tx, p.Id); err != nil {
			return err
		}
		_, err = outbox.Enqueue(ctx, tx, SubjectProductCreated, &catalogv1.ProductCreated{Product: stored})
		return err
	}()
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// updatableProductFields are UpdateProduct's mask paths; an empty mask means all of them.
var updatableProductFields = []string{"name", "description", "category_id", "images", "tags", "variants"}

// UpdateProduct applies the fields named in mask (all mutable fields when empty), checking the
// expected version when given, and publishes ProductUpdated. An update that changes nothing
// writes nothing, publishes nothing and is never refused as stale.
func (s *Service) UpdateProduct(ctx context.Context, p *catalogv1.Product, mask []string, expectedVersion int64) (*catalogv1.Product, error) {
	if p.GetId() == "" {
		return nil, rpcerr.Invalid("product.id", "required")
	}
	if expectedVersion < 0 {
		return nil, rpcerr.Invalid("expected_version", "must not be negative")
	}
	var stored *catalogv1.Product
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		cur, err := s.loadForUpdate(ctx, tx, p.GetId())
		if err != nil {
			return err
		}
		next := cloneForWrite(cur)
		if err := fieldmask.Apply(next, cloneForWrite(p), mask, updatableProductFields); err != nil {
			return err
		}
		var v rpcerr.Violations
		s.validateProduct(next, "product", &v, cur.GetImages()...)
		if err := v.Err(); err != nil {
			return err
		}
		keepAvailability(next, cur)
		// A change the product has already (a retry whose first answer was lost, with the
		// version it read before; a nightly sync sending what is there) is done: nothing to
		// refuse, write or publish, and no cart's cached prices dropped for nothing.
		if proto.Equal(next, cloneForWrite(cur)) {
			stored = cur
			return nil
		}
		if expectedVersion != 0 && cur.GetVersion() != expectedVersion {
			return rpcerr.Aborted("product %q is at version %d, not expected_version %d: reload and retry", cur.GetId(), cur.GetVersion(), expectedVersion)
		}
		if err := checkCategory(ctx, tx, next.GetCategoryId(), "product.category_id"); err != nil {
			return err
		}
		images, _ := json.Marshal(imagesJSON(next.GetImages()))
		// At the version read, besides the row lock: should the lock ever go, a writer that read
		// the same version as another finds its row changed and is refused, never writing over
		// the other's change.
		tag, err := tx.Exec(ctx, `UPDATE products SET name = $2, description = $3, category_id = $4, images = $5, tags = $6,
			search_text = $7, version = version + 1, update_time = now() WHERE id = $1 AND version = $8`,
			next.Id, next.Name, next.Description, next.CategoryId, images, nonNil(next.Tags), searchText(next), cur.GetVersion())
		if err != nil {
			return fmt.Errorf("update product: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return rpcerr.Aborted("product %q changed while it was updated: reload and retry", cur.GetId())
		}
		// Those left out are retired, not deleted: see writeVariants.
		if _, err := tx.Exec(ctx, `UPDATE variants SET retired = true WHERE product_id = $1 AND NOT retired`, next.Id); err != nil {
			return fmt.Errorf("replace variants: %w", err)
		}
		if err := writeVariants(ctx, tx, next); err != nil {
			return err
		}
		if stored, err = s.loadForUpdate(ctx, tx, next.Id); err != nil {
			return err
		}
		_, err = outbox.Enqueue(ctx, tx, SubjectProductUpdated, &catalogv1.ProductUpdated{Product: stored})
		return err
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// ArchiveProduct hides a product; archiving an archived product changes nothing.
func (s *Service) ArchiveProduct(ctx context.Context, id string) (*catalogv1.Product, error) {
	if id == "" {
		return nil, rpcerr.Invalid("product_id", "required")
	}
	var stored *catalogv1.Product
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		cur, err := s.loadForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if cur.GetStatus() == catalogv1.ProductStatus_PRODUCT_STATUS_ARCHIVED {
			stored = cur
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE products SET archived = true, version = version + 1, update_time = now() WHERE id = $1`, id); err != nil {
			return fmt.Errorf("archive product: %w", err)
		}
		if stored, err = s.loadForUpdate(ctx, tx, id); err != nil {
			return err
		}
		_, err = outbox.Enqueue(ctx, tx, SubjectProductArchived, &catalogv1.ProductArchived{Product: stored})
		return err
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

func checkCategory(ctx context.Context, tx pgx.Tx, id, field string) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM categories WHERE id = $1)`, id).Scan(&exists); err != nil {
		return fmt.Errorf("check category: %w", err)
	}
	if !exists {
		return rpcerr.Invalid(field, fmt.Sprintf("category %q does not exist", id))
	}
	return nil
}

// keepAvailability gives each of next's variants sent without available what cur had for its
// SKU: a client replacing the variants to change a price must not switch a seasonal variant
// back on. A variant new to the product is available, as on create.
func keepAvailability(next, cur *catalogv1.Product) {
	for _, v := range next.GetVariants() {
		if v.Available != nil {
			continue
		}
		for _, was := range cur.GetVariants() {
			if was.GetSku() == v.GetSku() {
				v.Available = proto.Bool(was.GetAvailable())
				break
			}
		}
	}
}

// writeVariants writes p's variants, each taking its SKU or, when p had it, taking it back (a
// variant of p retired by an earlier update and listed again). A SKU is never deleted nor given
// to another product: carts, holds and orders keep it, and it must go on meaning what they
// bought (a retired variant resolves, not orderable).
func writeVariants(ctx context.Context, tx pgx.Tx, p *catalogv1.Product) error {
	for i, v := range p.GetVariants() {
		tag, err := tx.Exec(ctx, `INSERT INTO variants (sku, product_id, name, price_minor, currency, available, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price_minor = excluded.price_minor,
				currency = excluded.currency, available = excluded.available, position = excluded.position, retired = false
			WHERE variants.product_id = excluded.product_id`,
			v.GetSku(), p.GetId(), v.GetName(), v.GetPrice().GetAmountMinor(), v.GetPrice().GetCurrencyCode(), v.Available == nil || v.GetAvailable(), i)
		if err != nil {
			return fmt.Errorf("insert variant %s: %w", v.GetSku(), err)
		}
		if tag.RowsAffected() == 0 {
			return skuTaken(ctx, tx, i, v.GetSku())
		}
	}
	return nil
}

// skuTaken reports a SKU owned by another product, naming it: SKUs are unique across the
// catalog. A create retried without an id (its first answer lost) learns so which product the
// first try made.
func skuTaken(ctx context.Context, tx pgx.Tx, i int, sku string) error {
	var (
		owner   string
		retired bool
	)
	if err := tx.QueryRow(ctx, `SELECT product_id, retired FROM variants WHERE sku = $1`, sku).Scan(&owner, &retired); err != nil {
		return fmt.Errorf("owner of sku %s: %w", sku, err)
	}
	why := fmt.Sprintf("%q already belongs to product %q", sku, owner)
	if retired {
		why += " (retired there: a SKU keeps meaning what was sold under it)"
	}
	return rpcerr.Invalid(fmt.Sprintf("product.variants[%d].sku", i), why)
}

// loadForUpdate reads a product inside tx, locking its row.
func (s *Service) loadForUpdate(ctx context.Context, tx pgx.Tx, id string) (*catalogv1.Product, error) {
	ps, err := s.queryProducts(ctx, tx, "SELECT "+productColumns+" FROM products WHERE id = $1 FOR UPDATE", id)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, rpcerr.NotFound("product", id)
	}
	return ps[0], nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// queryProducts runs a products query and attaches each product's variants.
func (s *Service) queryProducts(ctx context.Context, q querier, sql string, args ...any) ([]*catalogv1.Product, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("query products: %w", err)
	}
	products, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*catalogv1.Product, error) {
		var (
			p          catalogv1.Product
			images     []byte
			archived   bool
			created, u time.Time
		)
		if err := r.Scan(&p.Id, &p.Name, &p.Description, &p.CategoryId, &images, &p.Tags, &archived, &p.Version, &created, &u); err != nil {
			return nil, err
		}
		var imgs []imageJSON
		if err := json.Unmarshal(images, &imgs); err != nil {
			return nil, fmt.Errorf("product %s images: %w", p.Id, err)
		}
		for _, im := range imgs {
			p.Images = append(p.Images, &catalogv1.Image{Url: im.URL, AltText: im.Alt})
		}
		p.Status = catalogv1.ProductStatus_PRODUCT_STATUS_ACTIVE
		if archived {
			p.Status = catalogv1.ProductStatus_PRODUCT_STATUS_ARCHIVED
		}
		p.CreateTime, p.UpdateTime = timestamppb.New(created), timestamppb.New(u)
		return &p, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read products: %w", err)
	}
	if len(products) == 0 {
		return products, nil
	}
	ids := make([]string, len(products))
	byID := make(map[string]*catalogv1.Product, len(products))
	for i, p := range products {
		ids[i] = p.Id
		byID[p.Id] = p
	}
	vrows, err := q.Query(ctx, `SELECT sku, product_id, name, price_minor, currency, available FROM variants
		WHERE product_id = ANY($1) AND NOT retired ORDER BY product_id, position`, ids)
	if err != nil {
		return nil, fmt.Errorf("query variants: %w", err)
	}
	defer vrows.Close()
	for vrows.Next() {
		v := &catalogv1.Variant{Price: &commonv1.Money{}}
		var available bool
		if err := vrows.Scan(&v.Sku, &v.ProductId, &v.Name, &v.Price.AmountMinor, &v.Price.CurrencyCode, &available); err != nil {
			return nil, fmt.Errorf("scan variant: %w", err)
		}
		p := byID[v.ProductId]
		v.ProductName = p.Name
		v.Available = &available
		v.Orderable = available && p.Status == catalogv1.ProductStatus_PRODUCT_STATUS_ACTIVE
		p.Variants = append(p.Variants, v)
	}
	if err := vrows.Err(); err != nil {
		return nil, fmt.Errorf("read variants: %w", err)
	}
	return products, nil
}

type imageJSON struct {
	URL string `json:"url"`
	Alt string `json:"alt,omitempty"`
}

func imagesJSON(imgs []*catalogv1.Image) []imageJSON {
	out := make([]imageJSON, 0, len(imgs))
	for _, im := range imgs {
		out = append(out, imageJSON{URL: im.GetUrl(), Alt: im.GetAltText()})
	}
	return out
}

func searchText(p *catalogv1.Product) string {
	parts := append([]string{p.GetName(), p.GetDescription()}, p.GetTags()...)
	for _, v := range p.GetVariants() {
		parts = append(parts, v.GetSku())
	}
	return searchForm(strings.Join(parts, " "))
}

// searchForm is text as searched, stored and asked alike: lower-cased here, whatever the
// database's ctype (searchQuerySQL), and composed (NFC), so that an accent typed as a combining
// mark finds the word written with the accented letter, and the other way round.
func searchForm(s string) string {
	return strings.ToLower(norm.NFC.String(s))
}

// cloneForWrite copies the client-settable fields, dropping output-only ones.
func cloneForWrite(p *catalogv1.Product) *catalogv1.Product {
	out := &catalogv1.Product{
		Id: p.GetId(), Name: p.GetName(), Description: p.GetDescription(), CategoryId: p.GetCategoryId(),
		Images: p.GetImages(), Tags: p.GetTags(), Version: p.GetVersion(), Status: p.GetStatus(),
	}
	for _, v := range p.GetVariants() {
		out.Variants = append(out.Variants, &catalogv1.Variant{Sku: v.GetSku(), Name: v.GetName(), Price: v.GetPrice(), Available: v.Available})
	}
	return out
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// nonNil keeps a missing list from becoming SQL NULL.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
