package backlog_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var queue = backlog.Query{
	SQL: `SELECT count(*)::float8, coalesce(max(n), 0)::float8 FROM queue`,
	Gauges: []backlog.Gauge{
		{Name: "test_queue_items", Help: "Items waiting."},
		{Name: "test_queue_largest", Help: "The largest item."},
	},
}

// A scrape reports each query's row as gauges labelled with the schema, read when scraped.
func TestScrapeReadsTheQueueAtThatMoment(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	if _, err := pool.Exec(t.Context(), `CREATE TABLE queue (n int)`); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	unregister, err := backlog.Register(reg, backlog.New(pool, "shop", []backlog.Query{queue}, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer unregister()

	want := func(items, largest string) string {
		return `
# HELP test_queue_items Items waiting.
# TYPE test_queue_items gauge
test_queue_items{schema="shop"} ` + items + `
# HELP test_queue_largest The largest item.
# TYPE test_queue_largest gauge
test_queue_largest{schema="shop"} ` + largest + `
`
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("0", "0")), "test_queue_items", "test_queue_largest"); err != nil {
		t.Errorf("empty queue: %v", err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO queue VALUES (3), (7)`); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("2", "7")), "test_queue_items", "test_queue_largest"); err != nil {
		t.Errorf("two items: %v", err)
	}
}

// A query that fails leaves its gauges out of the scrape (no false zero for an alert to trust)
// and counts the failure, and the scrape itself still succeeds: the rest of /metrics is served.
func TestAFailedReadLeavesTheGaugesOutAndIsCounted(t *testing.T) {
	pool := testenv.Pool(t, "", nil) // no queue table: the query fails
	reg := prometheus.NewPedanticRegistry()
	if _, err := backlog.Register(reg, backlog.New(pool, "shop", []backlog.Query{queue}, testenv.Logger(t))); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatalf("the scrape failed: %v", err)
		}
		for _, f := range families {
			if strings.HasPrefix(f.GetName(), "test_queue") {
				t.Errorf("a failed read reported %s", f.GetName())
			}
		}
	}
	want := `
# HELP handoff_backlog_scrape_failures_total Scrapes whose backlog statements failed or timed out, by schema; their gauges were left out.
# TYPE handoff_backlog_scrape_failures_total counter
handoff_backlog_scrape_failures_total{schema="shop"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "handoff_backlog_scrape_failures_total"); err != nil {
		t.Errorf("failures counted: %v", err)
	}
}

// A second collector of a schema already reported in the process (two copies of a service in
// one test process) is no error: the first reports the same figures.
func TestRegisteringASchemaTwiceIsNoError(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	reg := prometheus.NewPedanticRegistry()
	first, err := backlog.Register(reg, backlog.New(pool, "shop", []backlog.Query{queue}, nil))
	if err != nil {
		t.Fatal(err)
	}
	second, err := backlog.Register(reg, backlog.New(pool, "shop", []backlog.Query{queue}, nil))
	if err != nil {
		t.Fatalf("the second copy: %v", err)
	}
	second()
	first()
	if _, err := backlog.Register(reg, backlog.New(pool, "shop", []backlog.Query{queue}, nil)); err != nil {
		t.Errorf("registering again after both ended: %v", err)
	}
}
