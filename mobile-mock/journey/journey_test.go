package journey

import (
	"testing"
	"time"
	_ "time/tzdata" // LoadLocation works on machines without a zoneinfo database
)

func TestStoreClockGivesTheMachinesClockToo(t *testing.T) {
	at := time.Date(2026, 11, 24, 19, 25, 0, 0, time.UTC)
	newYork, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		zone  string
		local *time.Location
		want  string
	}{
		{"America/New_York", time.UTC, "14:25 EST, the store's time (19:25 UTC here)"},
		{"America/New_York", newYork, "14:25 EST"},
		{"", time.UTC, "19:25 UTC"},
		{"Not/AZone", time.UTC, "19:25 UTC"},
	} {
		if got := storeClock(at, tc.zone, tc.local); got != tc.want {
			t.Errorf("storeClock(%q, local %s) = %q, want %q", tc.zone, tc.local, got, tc.want)
		}
	}
}
