package dbclock_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/handoff-dev/handoff/internal/dbclock"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// A clock that is off is logged once; the gauge says it at every scrape while it lasts (what an
// alert needs), by schema, and says nothing before any offset is known.
func TestTheOffsetIsServedAsAGaugeBySchema(t *testing.T) {
	c := dbclock.New(standing, testenv.Logger(t))
	col := c.Collector("fulfilment")
	if n := testutil.CollectAndCount(col, dbclock.OffsetMetric); n != 0 {
		t.Fatalf("%d samples before any offset is known; want none", n)
	}
	c.Observe(base.Add(-90 * time.Second))
	want := `# HELP handoff_db_clock_offset_seconds How far the database's clock is ahead of this copy's (negative: behind), as the copy last measured or observed it; past 2 s (dbclock.WarnOffset) the machine's clock is wrong.
# TYPE handoff_db_clock_offset_seconds gauge
handoff_db_clock_offset_seconds{schema="fulfilment"} -90
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), dbclock.OffsetMetric); err != nil {
		t.Fatal(err)
	}
}
