package catalog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	"github.com/handoff-dev/handoff/services/catalog"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a catalog on its own schema, served over real gRPC and real NATS, with its outbox
// relayed to a real JetStream.
type env struct {
	svc    *catalog.Service
	pool   *pgxpool.Pool
	nc     *nats.Conn
	js     jetstream.JetStream
	public catalogv1.CatalogServiceClient
	admin  catalogv1.CatalogAdminServiceClient
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, testenv.Pool(t, "", catalog.Migrations()))
}

// newEnvOn is newEnv on pool's database.
func newEnvOn(t *testing.T, pool *pgxpool.Pool) *env {
	t.Helper()
	ctx := t.Context()
	ns := testenv.NATS(t)
	nc := testenv.NATSConn(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	svc := catalog.New(catalog.Config{Pool: pool, Currency: "USD", Logger: testenv.Logger(t)})

	rpc, err := natsrpc.AddService(nc, "catalog", "0.0.1", "catalog tests", testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rpc.Stop() })
	if err := svc.RegisterNATS(rpc); err != nil {
		t.Fatal(err)
	}

	srv := grpc.NewServer()
	svc.RegisterGRPC(srv)
	conn := testenv.GRPC(t, srv)

	relayCtx, stop := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		_ = outbox.NewRelay(pool, js, outbox.RelayConfig{Logger: testenv.Logger(t)}).Run(relayCtx)
	}()
	t.Cleanup(func() { stop(); <-relayDone })

	return &env{svc: svc, pool: pool, nc: nc, js: js,
		public: catalogv1.NewCatalogServiceClient(conn), admin: catalogv1.NewCatalogAdminServiceClient(conn)}
}

func (e *env) loadDemo(t *testing.T) {
	t.Helper()
	loaded, err := e.svc.LoadDemo(t.Context(), demo.Seattle())
	if err != nil || !loaded {
		t.Fatalf("LoadDemo = %v, %v; want true, nil", loaded, err)
	}
}

func (e *env) countProducts(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM products`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func wantCode(t *testing.T, err error, code codes.Code, mentions ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), code)
	}
	for _, m := range mentions {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("message %q does not mention %q", st.Message(), m)
		}
	}
}

func TestDemoLoadsOnceAndPagesThroughEveryProductInNameOrder(t *testing.T) {
	e := newEnv(t)
	e.loadDemo(t)
	if again, err := e.svc.LoadDemo(t.Context(), demo.Seattle()); err != nil || again {
		t.Fatalf("second LoadDemo = %v, %v; want false, nil (catalog already filled)", again, err)
	}
	want := len(demo.Seattle().Products)
	var (
		names []string
		seen  = map[string]bool{}
		token string
	)
	for pages := 0; ; pages++ {
		if pages > want {
			t.Fatal("paging does not terminate")
		}
		res, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{PageSize: 17, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range res.GetProducts() {
			if seen[p.GetId()] {
				t.Fatalf("product %s returned twice", p.GetId())
			}
			seen[p.GetId()] = true
			names = append(names, p.GetName())
			if len(p.GetVariants()) == 0 || p.GetVariants()[0].GetPrice().GetCurrencyCode() != "USD" {
				t.Fatalf("product %s listed without priced variants: %v", p.GetId(), p.GetVariants())
			}
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != want {
		t.Fatalf("listed %d products, want %d", len(seen), want)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] > names[i] {
			t.Fatalf("not in name order: %q before %q", names[i-1], names[i])
		}
	}
}

func TestSearchMatchesWordPrefixesAndCategoryIncludesChildren(t *testing.T) {
	e := newEnv(t)
	e.loadDemo(t)
	res, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: "latt", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetProducts()) == 0 {
		t.Fatal(`query "latt" found nothing; want the lattes`)
	}
	for _, p := range res.GetProducts() {
		text := strings.ToLower(p.GetName() + " " + p.GetDescription() + " " + strings.Join(p.GetTags(), " "))
		if !strings.Contains(text, "latt") {
			t.Errorf("%q does not match %q", p.GetName(), "latt")
		}
	}
	if res, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: "&|!:*"}); err != nil || len(res.GetProducts()) != 0 {
		t.Fatalf("punctuation-only query = %v, %v; want no products and no error", res.GetProducts(), err)
	}

	// A top-level category lists its children's products.
	chain := demo.Seattle()
	var parent string
	for _, c := range chain.Categories {
		if c.ParentID == "" {
			parent = c.ID
			break
		}
	}
	children := map[string]bool{}
	for _, c := range chain.Categories {
		if c.ParentID == parent {
			children[c.ID] = true
		}
	}
	want := 0
	for _, p := range chain.Products {
		if children[p.CategoryID] || p.CategoryID == parent {
			want++
		}
	}
	res, err = e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{CategoryId: parent, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetProducts()) != min(want, 100) {
		t.Fatalf("category %s listed %d products, want %d", parent, len(res.GetProducts()), min(want, 100))
	}
}

func validProduct() *catalogv1.Product {
	return &catalogv1.Product{
		Id: "prd-test-brew", Name: "Test Brew", Description: "A coffee for tests.", CategoryId: "cat-test",
		Images: []*catalogv1.Image{{Url: "https://images.example.com/test.jpg"}},
		Variants: []*catalogv1.Variant{
			{Sku: "TEST-BREW-12", Name: "12 oz", Price: &commonv1.Money{AmountMinor: 325, CurrencyCode: "USD"}},
			{Sku: "TEST-BREW-16", Name: "16 oz", Price: &commonv1.Money{AmountMinor: 375, CurrencyCode: "USD"}},
		},
	}
}

// searchFinds fails t unless a search for query lists the product id.
func (e *env) searchFinds(t *testing.T, query, id string) {
	t.Helper()
	res, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: query, PageSize: 100})
	if err != nil {
		t.Fatalf("search %q: %v", query, err)
	}
	var ids []string
	for _, p := range res.GetProducts() {
		if p.GetId() == id {
			return
		}
		ids = append(ids, p.GetId())
	}
	t.Errorf("search %q found %v; want %s among them", query, ids, id)
}

// What a product shows can be typed back to find it: a name or description with a decimal
// point ("1.5L", "2.5 oz"), or a SKU with dots or a hyphen before a digit. The words of a
// query are split as the stored text's are.
func TestSearchFindsAProductByWhatItShows(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	p := validProduct()
	p.Id, p.Name, p.Description = "prd-sparkling", "Sparkling Water 1.5L", "Chilled, 2.5 oz of bubbles."
	p.Variants = p.Variants[:1]
	p.Variants[0].Sku = "SPRK.WATER.15"
	if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: p}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: validProduct()}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"sparkling", "Sparkling Water 1.5L", "water 1.", "SPRK.WATER.15", "chilled 2.5 oz"} {
		e.searchFinds(t, q, "prd-sparkling")
	}
	e.searchFinds(t, "TEST-BREW-16", "prd-test-brew")
	e.searchFinds(t, "test brew", "prd-test-brew")
	res, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: "water 2.6"})
	if err != nil || len(res.GetProducts()) != 0 {
		t.Errorf("search %q = %v, %v; want nothing", "water 2.6", res.GetProducts(), err)
	}
}

// Text composed either way is the same to a shopper: "Café" typed with a combining accent
// (NFD, as some keyboards and pasted text give it) finds the product named with a composed one,
// and the other way round. Before, neither found the other.
func TestSearchFindsAWordWhicheverWayItsAccentsAreComposed(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	composed, decomposed := validProduct(), validProduct()
	composed.Id, composed.Name, composed.Variants = "prd-cafe", "Café Crème", composed.Variants[:1]
	decomposed.Id, decomposed.Name, decomposed.Variants = "prd-the", "The\u0301 Glace\u0301", decomposed.Variants[1:]
	for _, p := range []*catalogv1.Product{composed, decomposed} {
		if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: p}); err != nil {
			t.Fatal(err)
		}
	}
	e.searchFinds(t, "cafe\u0301 cre\u0300me", "prd-cafe")
	e.searchFinds(t, "café", "prd-cafe")
	e.searchFinds(t, "thé glacé", "prd-the")
}

// A product whose search text was stored decomposed, by the service before it composed text, is
// found by the composed word once the upgrade's migration has run.
func TestAnUpgradeComposesTheSearchTextOfProductsWrittenBefore(t *testing.T) {
	schema := testenv.UniqueSchema(t, "catnfc")
	pool := testenv.Pool(t, schema, testenv.MigrationsUpTo(t, catalog.Migrations(), "00004"))
	for _, sql := range []string{
		`INSERT INTO categories (id, slug, name) VALUES ('cat-test', 'test', 'Test')`,
		`INSERT INTO products (id, name, category_id, search_text) VALUES ('prd-the', 'Thé', 'cat-test', 'the' || U&'\0301' || ' the-1')`,
		`INSERT INTO variants (sku, product_id, name, price_minor, currency, position) VALUES ('THE-1', 'prd-the', 'Pot', 325, 'USD', 0)`,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := pgdb.Migrate(t.Context(), pool, schema, catalog.Migrations(), testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	newEnvOn(t, pool).searchFinds(t, "thé", "prd-the")
}

// A database whose ctype is C (the one-process mode's own cluster is made so) lower-cases
// ASCII only: a name with a non-ASCII capital is still found by typing it either way.
func TestSearchFindsNonASCIINamesInACLocaleDatabase(t *testing.T) {
	url := testenv.FreshDatabaseURL(t, "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
	e := newEnvOn(t, testenv.PoolOn(t, url, "", catalog.Migrations()))
	e.createTestCategory(t)
	for _, n := range []struct{ id, name, sku string }{{"prd-eclair", "Éclair", "ECLAIR-1"}, {"prd-kofe", "Кофе Латте", "KOFE-1"}} {
		p := validProduct()
		p.Id, p.Name = n.id, n.name
		p.Variants = p.Variants[:1]
		p.Variants[0].Sku = n.sku
		if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: p}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"Éclair", "éclair", "ÉCL"} {
		e.searchFinds(t, q, "prd-eclair")
	}
	for _, q := range []string{"Кофе", "кофе латте", "ЛАТ"} {
		e.searchFinds(t, q, "prd-kofe")
	}
}

// A product written before the service lower-cased its search text (its name's capitals
// kept) is lower-cased by the upgrade's migration: found in a C-ctype database too.
func TestAnUpgradeLowerCasesTheSearchTextOfProductsWrittenBefore(t *testing.T) {
	url := testenv.FreshDatabaseURL(t, "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
	schema := testenv.UniqueSchema(t, "catmig")
	pool := testenv.PoolOn(t, url, schema, testenv.MigrationsUpTo(t, catalog.Migrations(), "00002"))
	// As the service before wrote it (its tables as they were then).
	if _, err := pool.Exec(t.Context(), `
		INSERT INTO categories (id, slug, name) VALUES ('cat-test', 'test', 'Test');
		INSERT INTO products (id, name, description, category_id, search_text)
			VALUES ('prd-eclair', 'Éclair', 'A coffee for tests.', 'cat-test', 'Éclair A coffee for tests. ECLAIR-1');
		INSERT INTO variants (sku, product_id, name, price_minor, currency, position) VALUES ('ECLAIR-1', 'prd-eclair', '12 oz', 325, 'USD', 0)`); err != nil {
		t.Fatal(err)
	}
	if err := pgdb.Migrate(t.Context(), pool, schema, catalog.Migrations(), testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, pool)
	for _, q := range []string{"Éclair", "éclair", "eclair-1"} {
		e.searchFinds(t, q, "prd-eclair")
	}
}

func (e *env) createTestCategory(t *testing.T) {
	t.Helper()
	if _, err := e.admin.CreateCategory(t.Context(), &catalogv1.CreateCategoryRequest{Category: &catalogv1.Category{Id: "cat-test", Slug: "test", Name: "Test"}}); err != nil {
		t.Fatal(err)
	}
}

func TestBadProductsAreRefusedNamingTheFieldAndNothingIsStored(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	cases := []struct {
		name  string
		edit  func(p *catalogv1.Product)
		field string
	}{
		{"no name", func(p *catalogv1.Product) { p.Name = "" }, "product.name"},
		{"blank name", func(p *catalogv1.Product) { p.Name = "   " }, "product.name"},
		{"unknown category", func(p *catalogv1.Product) { p.CategoryId = "cat-nope" }, "product.category_id"},
		{"no variants", func(p *catalogv1.Product) { p.Variants = nil }, "product.variants"},
		{"lower-case sku", func(p *catalogv1.Product) { p.Variants[0].Sku = "brew-12" }, "product.variants[0].sku"},
		{"duplicate sku", func(p *catalogv1.Product) { p.Variants[1].Sku = p.Variants[0].Sku }, "product.variants[1].sku"},
		{"negative price", func(p *catalogv1.Product) { p.Variants[1].Price.AmountMinor = -1 }, "product.variants[1].price.amount_minor"},
		{"price past the maximum", func(p *catalogv1.Product) { p.Variants[0].Price.AmountMinor = 1e12 + 1 }, "product.variants[0].price.amount_minor"},
		{"other currency", func(p *catalogv1.Product) { p.Variants[0].Price.CurrencyCode = "EUR" }, "product.variants[0].price.currency_code"},
		{"missing price", func(p *catalogv1.Product) { p.Variants[0].Price = nil }, "product.variants[0].price"},
		{"relative image", func(p *catalogv1.Product) { p.Images[0].Url = "/img.jpg" }, "product.images[0].url"},
		{"plain http image (mixed content in an https app)", func(p *catalogv1.Product) { p.Images[0].Url = "http://images.example.com/a.jpg" }, "product.images[0].url"},
		{"image URL with credentials", func(p *catalogv1.Product) { p.Images[0].Url = "https://u:p@images.example.com/a.jpg" }, "product.images[0].url"},
		// Three an app cannot load, or that break the page showing them.
		{"image URL with a port out of range", func(p *catalogv1.Product) { p.Images[0].Url = "https://images.example.com:99999/a.jpg" }, "product.images[0].url"},
		{"image URL with a raw space", func(p *catalogv1.Product) { p.Images[0].Url = "https://images.example.com/a b.jpg" }, "product.images[0].url"},
		{"image URL with a quote", func(p *catalogv1.Product) { p.Images[0].Url = `https://images.example.com/a.jpg?x="onerror="x` }, "product.images[0].url"},
		{"image URL with a bad escape", func(p *catalogv1.Product) { p.Images[0].Url = "https://images.example.com/a.jpg?x=%zz" }, "product.images[0].url"},
		{"image URL with a bad host", func(p *catalogv1.Product) { p.Images[0].Url = "https://images_example!.com/a.jpg" }, "product.images[0].url"},
		{"long alt text", func(p *catalogv1.Product) { p.Images[0].AltText = strings.Repeat("x", 501) }, "product.images[0].alt_text"},
		{"bad id", func(p *catalogv1.Product) { p.Id = "Has Spaces" }, "product.id"},
		{"long name", func(p *catalogv1.Product) { p.Name = strings.Repeat("x", 201) }, "product.name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := validProduct()
			c.edit(p)
			_, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: p})
			wantCode(t, err, codes.InvalidArgument, c.field)
			if n := e.countProducts(t); n != 0 {
				t.Fatalf("%d products stored after a refused create", n)
			}
		})
	}
}

// nextEvent reads the next catalog event from JetStream.
func nextEvent(t *testing.T, cons jetstream.Consumer, into proto.Message) jetstream.Msg {
	t.Helper()
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	if err := proto.Unmarshal(msg.Data(), into); err != nil {
		t.Fatalf("event %s: %v", msg.Subject(), err)
	}
	if msg.Headers().Get(jetstream.MsgIDHeader) == "" {
		t.Fatalf("event %s without Nats-Msg-Id", msg.Subject())
	}
	return msg
}

func TestProductLifecyclePublishesEventsAndRefusesStaleUpdates(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	cons, err := e.js.OrderedConsumer(ctx, streams.EventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"handoff.catalog.product.>"}})
	if err != nil {
		t.Fatal(err)
	}
	e.createTestCategory(t)

	created, err := e.admin.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: validProduct()})
	if err != nil {
		t.Fatal(err)
	}
	p := created.GetProduct()
	if p.GetVersion() != 1 || p.GetStatus() != catalogv1.ProductStatus_PRODUCT_STATUS_ACTIVE || !p.GetVariants()[0].GetOrderable() {
		t.Fatalf("created product = %v", p)
	}
	var ev catalogv1.ProductCreated
	if msg := nextEvent(t, cons, &ev); msg.Subject() != "handoff.catalog.product.created" || ev.GetProduct().GetId() != p.GetId() {
		t.Fatalf("event %s = %v", msg.Subject(), &ev)
	}

	// A write against a stale version is refused and changes nothing.
	stale := &catalogv1.UpdateProductRequest{Product: &catalogv1.Product{Id: p.GetId(), Name: "Renamed"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}, ExpectedVersion: 7}
	_, err = e.admin.UpdateProduct(ctx, stale)
	wantCode(t, err, codes.Aborted, "version 1")
	stale.ExpectedVersion = -1
	_, err = e.admin.UpdateProduct(ctx, stale)
	wantCode(t, err, codes.InvalidArgument, "expected_version")
	got, _ := e.public.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: p.GetId()})
	if got.GetProduct().GetName() != "Test Brew" {
		t.Fatalf("stale update changed the name to %q", got.GetProduct().GetName())
	}

	stale.ExpectedVersion = 1
	updated, err := e.admin.UpdateProduct(ctx, stale)
	if err != nil {
		t.Fatal(err)
	}
	if updated.GetProduct().GetName() != "Renamed" || updated.GetProduct().GetVersion() != 2 || len(updated.GetProduct().GetVariants()) != 2 {
		t.Fatalf("updated = %v", updated.GetProduct())
	}
	var up catalogv1.ProductUpdated
	if msg := nextEvent(t, cons, &up); msg.Subject() != "handoff.catalog.product.updated" || up.GetProduct().GetName() != "Renamed" {
		t.Fatalf("event %s = %v", msg.Subject(), &up)
	}

	if _, err := e.admin.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{Product: &catalogv1.Product{Id: p.GetId()}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status"}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("update of output-only field: %v; want InvalidArgument naming update_mask", err)
	}

	archived, err := e.admin.ArchiveProduct(ctx, &catalogv1.ArchiveProductRequest{ProductId: p.GetId()})
	if err != nil || archived.GetProduct().GetStatus() != catalogv1.ProductStatus_PRODUCT_STATUS_ARCHIVED {
		t.Fatalf("archive = %v, %v", archived, err)
	}
	var ar catalogv1.ProductArchived
	if msg := nextEvent(t, cons, &ar); msg.Subject() != "handoff.catalog.product.archived" {
		t.Fatalf("event %s", msg.Subject())
	}
	if _, err := e.admin.ArchiveProduct(ctx, &catalogv1.ArchiveProductRequest{ProductId: p.GetId()}); err != nil {
		t.Fatalf("archiving twice: %v", err)
	}
	if msg, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
		t.Fatalf("archiving an archived product published %s", msg.Subject())
	}

	// Archived: hidden from the list, still readable by id, its SKUs no longer orderable.
	list, _ := e.public.ListProducts(ctx, &catalogv1.ListProductsRequest{})
	if len(list.GetProducts()) != 0 {
		t.Fatalf("archived product listed: %v", list.GetProducts())
	}
	vs, err := e.public.BatchGetVariants(ctx, &catalogv1.BatchGetVariantsRequest{Skus: []string{"TEST-BREW-16"}})
	if err != nil || vs.GetVariants()[0].GetOrderable() {
		t.Fatalf("archived variant = %v, %v; want orderable=false", vs, err)
	}
}

func TestSKUOfAnotherProductIsRefused(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: validProduct()}); err != nil {
		t.Fatal(err)
	}
	other := validProduct()
	other.Id = "prd-other"
	_, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: other})
	wantCode(t, err, codes.InvalidArgument, "product.variants[0].sku", "TEST-BREW-12")
	// A create retried without an id (its first answer lost) learns which product it made.
	retry := validProduct()
	retry.Id = ""
	_, err = e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: retry})
	wantCode(t, err, codes.InvalidArgument, "product.variants[0].sku", `"TEST-BREW-12" already belongs to product "prd-test-brew"`)
	if n := e.countProducts(t); n != 1 {
		t.Fatalf("%d products after the refused create, want 1", n)
	}
}

func TestVariantsPricedOverNATSAndUnknownSKUNamed(t *testing.T) {
	e := newEnv(t)
	e.loadDemo(t)
	var res catalogv1.BatchGetVariantsResponse
	err := natsrpc.Call(t.Context(), e.nc, catalog.SubjectBatchGetVariants, &catalogv1.BatchGetVariantsRequest{Skus: []string{"LATTE-16", "LATTE-12", "LATTE-16"}}, &res)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetVariants()) != 2 || res.GetVariants()[0].GetSku() != "LATTE-16" || res.GetVariants()[1].GetSku() != "LATTE-12" {
		t.Fatalf("variants = %v; want LATTE-16, LATTE-12 in request order, duplicate answered once", res.GetVariants())
	}
	if v := res.GetVariants()[0]; v.GetProductName() == "" || v.GetPrice().GetAmountMinor() <= 0 || !v.GetOrderable() {
		t.Fatalf("variant = %v", v)
	}
	err = natsrpc.Call(t.Context(), e.nc, catalog.SubjectBatchGetVariants, &catalogv1.BatchGetVariantsRequest{Skus: []string{"LATTE-16", "NO-SUCH-SKU"}}, &res)
	wantCode(t, err, codes.NotFound, `"NO-SUCH-SKU"`)
	err = natsrpc.Call(t.Context(), e.nc, catalog.SubjectBatchGetVariants, &catalogv1.BatchGetVariantsRequest{}, &res)
	wantCode(t, err, codes.InvalidArgument, "skus")
}

func TestBadPagingIsInvalidArgumentNamingTheField(t *testing.T) {
	e := newEnv(t)
	_, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{PageToken: "not-a-token!"})
	wantCode(t, err, codes.InvalidArgument, "page_token")
	_, err = e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{PageSize: -3})
	wantCode(t, err, codes.InvalidArgument, "page_size")
	_, err = e.public.GetProduct(t.Context(), &catalogv1.GetProductRequest{ProductId: "prd-nope"})
	wantCode(t, err, codes.NotFound, "prd-nope")
}

// A page token continues the listing it came from: sent with another search it is refused
// naming page_token, where its position would have skipped products of the new search.
func TestAPageTokenUsedWithAnotherSearchIsRefused(t *testing.T) {
	e := newEnv(t)
	e.loadDemo(t)
	first, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{PageSize: 2})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	_, err = e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{Query: "latte", PageSize: 2, PageToken: first.GetNextPageToken()})
	wantCode(t, err, codes.InvalidArgument, "page_token")
	// The same listing, a page size changed, goes on.
	if _, err := e.public.ListProducts(t.Context(), &catalogv1.ListProductsRequest{PageSize: 5, PageToken: first.GetNextPageToken()}); err != nil {
		t.Fatalf("the same listing with another page size: %v", err)
	}
}

// A category naming itself as its parent passes the foreign key (the row is there once
// inserted), and no root would reach it: refused, naming the field, nothing stored.
func TestACategoryCannotBeItsOwnParent(t *testing.T) {
	e := newEnv(t)
	for _, c := range []*catalogv1.Category{
		{Id: "cat-loop", Slug: "loop", Name: "Loop", ParentId: "cat-loop"},
		{Slug: "loop", Name: "Loop", ParentId: "cat-loop"}, // the id the server would give it
	} {
		_, err := e.admin.CreateCategory(t.Context(), &catalogv1.CreateCategoryRequest{Category: c})
		wantCode(t, err, codes.InvalidArgument, "category.parent_id")
	}
	res, err := e.public.ListCategories(t.Context(), &catalogv1.ListCategoriesRequest{})
	if err != nil || len(res.GetCategories()) != 0 {
		t.Fatalf("categories after the refusals: %v, %v; want none", res.GetCategories(), err)
	}
}

// A category left to the server to name gets cat-<slug>: with a slug of more than 60
// characters that would pass the 64 an id may have, and no product could name the category.
// It is refused, asking for an id; with one given, the long slug is fine.
func TestACategoryWithALongSlugNeedsAnID(t *testing.T) {
	e := newEnv(t)
	slug := strings.Repeat("s", 61)
	_, err := e.admin.CreateCategory(t.Context(), &catalogv1.CreateCategoryRequest{Category: &catalogv1.Category{Slug: slug, Name: "Long"}})
	wantCode(t, err, codes.InvalidArgument, "category.id")
	res, err := e.admin.CreateCategory(t.Context(), &catalogv1.CreateCategoryRequest{Category: &catalogv1.Category{Id: "cat-long", Slug: slug, Name: "Long"}})
	if err != nil || res.GetCategory().GetId() != "cat-long" {
		t.Fatalf("the long slug with an id: %v, %v", res, err)
	}
	p := validProduct()
	p.CategoryId = "cat-long"
	if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: p}); err != nil {
		t.Fatalf("a product in the category: %v", err)
	}
}

// Replacing a product's variants to change a price, without saying whether each is available,
// leaves a switched-off variant off; a variant new to the product is available.
func TestAVariantSentAgainWithoutAvailableKeepsIt(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	p := validProduct()
	p.Variants[1].Available = proto.Bool(false) // out of season
	if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: p}); err != nil {
		t.Fatal(err)
	}
	edit := validProduct() // no availability given
	edit.Variants[0].Price.AmountMinor = 350
	edit.Variants = append(edit.Variants, &catalogv1.Variant{Sku: "TEST-BREW-20", Name: "20 oz", Price: &commonv1.Money{AmountMinor: 425, CurrencyCode: "USD"}})
	res, err := e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: edit, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"TEST-BREW-12": true, "TEST-BREW-16": false, "TEST-BREW-20": true}
	for _, v := range res.GetProduct().GetVariants() {
		if v.GetAvailable() != want[v.GetSku()] || v.GetOrderable() != want[v.GetSku()] {
			t.Errorf("%s after the update: available %v, orderable %v; want %v", v.GetSku(), v.GetAvailable(), v.GetOrderable(), want[v.GetSku()])
		}
	}
}

// A variant an update leaves out is retired, not deleted: its SKU still resolves to what it was
// (for the carts and orders that hold it), no longer orderable, and stays its product's, so no
// other product can take it. Before, the row was deleted and the SKU free: a shopper's cart line
// of "Test Brew, 16 oz" at 375 became another product at another price. Listed again, it is
// orderable again.
func TestAVariantLeftOutIsRetiredAndItsSKUStaysWithItsProduct(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: validProduct()}); err != nil {
		t.Fatal(err)
	}
	edit := validProduct()
	edit.Variants = edit.Variants[:1]
	res, err := e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: edit, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}})
	if err != nil {
		t.Fatal(err)
	}
	if vs := res.GetProduct().GetVariants(); len(vs) != 1 || vs[0].GetSku() != "TEST-BREW-12" {
		t.Fatalf("variants after leaving one out: %v; want TEST-BREW-12 only", vs)
	}
	resolve := func() *catalogv1.Variant {
		t.Helper()
		var got catalogv1.BatchGetVariantsResponse
		if err := natsrpc.Call(t.Context(), e.nc, catalog.SubjectBatchGetVariants, &catalogv1.BatchGetVariantsRequest{Skus: []string{"TEST-BREW-16"}}, &got); err != nil {
			t.Fatalf("the SKU left out: %v; want it still resolved", err)
		}
		return got.GetVariants()[0]
	}
	if v := resolve(); v.GetProductId() != "prd-test-brew" || v.GetName() != "16 oz" || v.GetPrice().GetAmountMinor() != 375 || v.GetOrderable() {
		t.Fatalf("the SKU left out resolves to %v; want its product's 16 oz at 375, not orderable", v)
	}

	other := validProduct()
	other.Id, other.Variants = "prd-other", other.Variants[1:]
	other.Variants[0].Price.AmountMinor = 5375
	_, err = e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: other})
	wantCode(t, err, codes.InvalidArgument, "product.variants[0].sku", `"TEST-BREW-16" already belongs to product "prd-test-brew" (retired there`)
	if v := resolve(); v.GetProductId() != "prd-test-brew" || v.GetPrice().GetAmountMinor() != 375 {
		t.Fatalf("after another product asked for it, the SKU resolves to %v", v)
	}

	if _, err := e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: validProduct(), UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}}); err != nil {
		t.Fatal(err)
	}
	if v := resolve(); !v.GetOrderable() {
		t.Fatalf("listed again, the SKU resolves to %v; want it orderable", v)
	}
}

// An update that changes nothing (a nightly sync sending what is there, a retry whose first
// answer was lost) writes nothing, publishes nothing and is not refused as stale. Before, it
// moved the version on, so an editor holding the version was refused for nothing, and its
// event dropped every cart's cached prices of the product.
func TestAnUpdateThatChangesNothingIsNoChange(t *testing.T) {
	e := newEnv(t)
	cons, err := e.js.OrderedConsumer(t.Context(), streams.EventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"handoff.catalog.product.>"}})
	if err != nil {
		t.Fatal(err)
	}
	e.createTestCategory(t)
	created, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: validProduct()})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*catalogv1.UpdateProductRequest{
		{Product: validProduct()}, // every field, as a sync sends it
		{Product: validProduct(), UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}, ExpectedVersion: 1},
		{Product: &catalogv1.Product{Id: "prd-test-brew", Name: "Test Brew"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}, ExpectedVersion: 9},
	} {
		res, err := e.admin.UpdateProduct(t.Context(), req)
		if err != nil {
			t.Fatalf("UpdateProduct(%v): %v; want the product as it is", req, err)
		}
		if got := res.GetProduct(); got.GetVersion() != 1 || !got.GetUpdateTime().AsTime().Equal(created.GetProduct().GetUpdateTime().AsTime()) {
			t.Fatalf("after an update that changes nothing: version %d, updated %s; want version 1, untouched", got.GetVersion(), got.GetUpdateTime().AsTime())
		}
	}
	if _, err := e.admin.ArchiveProduct(t.Context(), &catalogv1.ArchiveProductRequest{ProductId: "prd-test-brew"}); err != nil {
		t.Fatal(err)
	}
	var ev catalogv1.ProductCreated
	if msg := nextEvent(t, cons, &ev); msg.Subject() != catalog.SubjectProductCreated {
		t.Fatalf("first event %s, want %s", msg.Subject(), catalog.SubjectProductCreated)
	}
	var next catalogv1.ProductArchived
	if msg := nextEvent(t, cons, &next); msg.Subject() != catalog.SubjectProductArchived {
		t.Fatalf("the event after the create is %s; want none for the updates that changed nothing, then %s", msg.Subject(), catalog.SubjectProductArchived)
	}
}

// A new category is published, as every other catalog change is (the package says so, and an
// integration mirroring the menu needs it). Before, categories were written without an event.
func TestACreatedCategoryIsPublished(t *testing.T) {
	e := newEnv(t)
	cons, err := e.js.OrderedConsumer(t.Context(), streams.EventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"handoff.catalog.category.>"}})
	if err != nil {
		t.Fatal(err)
	}
	e.createTestCategory(t)
	var ev catalogv1.CategoryCreated
	if msg := nextEvent(t, cons, &ev); msg.Subject() != catalog.SubjectCategoryCreated || ev.GetCategory().GetId() != "cat-test" || ev.GetCategory().GetSlug() != "test" {
		t.Fatalf("event %s = %v; want cat-test created", msg.Subject(), &ev)
	}
}

// An image URL stored before the check of image URLs grew stricter (a raw space, an accented
// letter) does not block later changes of its product: a price change, which never sends it,
// and an update that changes nothing go through. A plain http one, never allowed, still does. A new URL like it is refused, the character
// named as it is and with its escape. Before, every update of such a product was refused,
// naming a field the caller had not sent.
func TestAnImageStoredBeforeAStricterCheckBlocksNoUpdate(t *testing.T) {
	e := newEnv(t)
	e.createTestCategory(t)
	if _, err := e.admin.CreateProduct(t.Context(), &catalogv1.CreateProductRequest{Product: validProduct()}); err != nil {
		t.Fatal(err)
	}
	const old = "https://images.example.com/Café Crème.jpg"
	if _, err := e.pool.Exec(t.Context(), `UPDATE products SET images = jsonb_build_array(jsonb_build_object('url', $1::text)) WHERE id = 'prd-test-brew'`, old); err != nil {
		t.Fatal(err)
	}
	edit := validProduct()
	edit.Variants[0].Price.AmountMinor = 350
	if _, err := e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: edit, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}}); err != nil {
		t.Fatalf("a price change of a product with an image stored before: %v", err)
	}
	got, err := e.public.GetProduct(t.Context(), &catalogv1.GetProductRequest{ProductId: "prd-test-brew"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: got.GetProduct()}); err != nil {
		t.Fatalf("an update that changes nothing, of a product with an image stored before: %v", err)
	}
	// One that was never allowed (plain http, stored before ce25815) still is not: an app
	// served over https would show mixed content.
	if _, err := e.pool.Exec(t.Context(), `UPDATE products SET images = '[{"url": "http://images.example.com/a.jpg"}]' WHERE id = 'prd-test-brew'`); err != nil {
		t.Fatal(err)
	}
	_, err = e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: edit, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}})
	wantCode(t, err, codes.InvalidArgument, "product.images[0].url", "https")
	fresh := validProduct()
	fresh.Images[0].Url = "https://images.example.com/thé.jpg"
	_, err = e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: fresh, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"images"}}})
	wantCode(t, err, codes.InvalidArgument, "product.images[0].url", `'é'`, "%C3%A9")
	fresh.Images[0].Url = "https://bücher.example/a.jpg"
	_, err = e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: fresh, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"images"}}})
	wantCode(t, err, codes.InvalidArgument, "product.images[0].url", "punycode")
	fresh.Images[0].Url = "https://my_bucket.storage.example.com/a.jpg"
	if _, err := e.admin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: fresh, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"images"}}}); err != nil {
		t.Fatalf("a bucket host with an underscore: %v", err)
	}
}
