package gcpolicy_test

import (
	"runtime/debug"
	"testing"

	"github.com/handoff-dev/handoff/internal/gcpolicy"
)

// current reads GOGC as the runtime has it (SetGCPercent returns the previous value).
func current() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestApplySetsTheDefaultWhenGOGCIsUnset(t *testing.T) {
	was := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(was) })

	if got := gcpolicy.Apply(func(string) string { return "" }); got != gcpolicy.DefaultPercent {
		t.Fatalf("Apply returned %d, want %d", got, gcpolicy.DefaultPercent)
	}
	if got := current(); got != gcpolicy.DefaultPercent {
		t.Fatalf("GOGC in effect %d, want %d", got, gcpolicy.DefaultPercent)
	}
}

func TestApplyLeavesAnOperatorsGOGC(t *testing.T) {
	was := debug.SetGCPercent(150) // as the runtime would have it from GOGC=150
	t.Cleanup(func() { debug.SetGCPercent(was) })

	for env, want := range map[string]int{"150": 150, "off": -1, "bogus": 100} {
		if got := gcpolicy.Apply(func(k string) string {
			if k == "GOGC" {
				return env
			}
			return ""
		}); got != want {
			t.Errorf("GOGC=%s: Apply returned %d, want %d", env, got, want)
		}
		if got := current(); got != 150 {
			t.Errorf("GOGC=%s: Apply changed the percent in effect to %d", env, got)
		}
	}
}
