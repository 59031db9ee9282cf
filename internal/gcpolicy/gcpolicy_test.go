package gcpolicy

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// current reads GOGC as the runtime has it (SetGCPercent returns the previous value).
func current() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestApplySetsTheDefaultWhenGOGCIsUnset(t *testing.T) {
	was, wasLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(was); debug.SetMemoryLimit(wasLimit) })

	if got := Apply(func(string) string { return "" }); got != DefaultPercent {
		t.Fatalf("Apply returned %d, want %d", got, DefaultPercent)
	}
	if got := current(); got != DefaultPercent {
		t.Fatalf("GOGC in effect %d, want %d", got, DefaultPercent)
	}
}

func TestApplyLeavesAnOperatorsGOGC(t *testing.T) {
	was, wasLimit := debug.SetGCPercent(150), debug.SetMemoryLimit(-1) // as the runtime would have it from GOGC=150
	t.Cleanup(func() { debug.SetGCPercent(was); debug.SetMemoryLimit(wasLimit) })

	for env, want := range map[string]int{"150": 150, "off": -1, "bogus": 100} {
		if got := Apply(func(k string) string {
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

func TestApplySetsASoftMemoryLimitBelowTheContainers(t *testing.T) {
	was := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(was) })
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unset := func(string) string { return "" }

	limited := write("limited", "2147483648\n")
	const want = 2147483648 / 10 * 9
	if got := applyMemoryLimit(unset, []string{filepath.Join(dir, "missing"), limited}); got != want {
		t.Errorf("limit under a 2 GiB container: %d, want %d (90%% of it)", got, want)
	}
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("soft limit in effect %d, want %d", got, want)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	for _, content := range []string{"max\n", "9223372036854771712\n"} { // v2 and v1 without a limit
		if got := applyMemoryLimit(unset, []string{write("none", content)}); got != 0 {
			t.Errorf("no container limit (%q): set %d", content, got)
		}
	}
	if got := applyMemoryLimit(func(k string) string {
		if k == "GOMEMLIMIT" {
			return "1GiB"
		}
		return ""
	}, []string{limited}); got != 0 {
		t.Errorf("with GOMEMLIMIT set: set %d, want the operator's left alone", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("soft limit changed to %d where it should not have been", got)
	}
}
