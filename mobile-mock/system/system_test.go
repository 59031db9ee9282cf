package system

import (
	"testing"
	"time"
	_ "time/tzdata" // LoadLocation works on machines without a zoneinfo database

	"github.com/handoff-dev/handoff/internal/demo"
)

// Whatever the time here, the zone chosen has it late morning, when every demo store open that
// day is open: a load run over the chain finds all of them taking orders.
func TestLateMorningZoneHasEveryDemoStoreOpenThatDayOpen(t *testing.T) {
	start := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC) // a Sunday: the office stores are shut
	for m := 0; m < 7*24*60; m += 17 {
		now := start.Add(time.Duration(m) * time.Minute)
		zone := LateMorningZone(now)
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatalf("%s: zone %q: %v", now, zone, err)
		}
		local := now.In(loc)
		if local.Hour() != 11 {
			t.Fatalf("%s: it is %s in %s, want 11:xx", now, local.Format("15:04"), zone)
		}
		clock := local.Format("15:04")
		open := 0
		for _, s := range demo.Seattle().InTimeZone(zone).Stores {
			for _, h := range s.Hours {
				if h.Weekday != local.Weekday() {
					continue
				}
				if h.Open > clock || h.Close <= clock {
					t.Fatalf("%s: store %s open %s–%s on %s, not at %s", now, s.ID, h.Open, h.Close, h.Weekday, clock)
				}
				open++
			}
		}
		if open < 40 {
			t.Fatalf("%s: %d demo stores open at %s %s", now, open, local.Weekday(), clock)
		}
	}
}
