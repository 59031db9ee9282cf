// Package gcpolicy sets how often Handoff's processes collect garbage.
//
// Go's default (GOGC=100) collects whenever the heap has doubled its live size. A Handoff
// process keeps a small live heap (tens of megabytes: pools, caches, in-flight calls) and
// allocates fast under load (every request's messages and rows), so by default it spends about
// an eighth of its CPU marking and assisting the collector. Letting the heap grow to five times
// its live size cuts that to a fraction for a few hundred megabytes of memory, which servers
// and laptops alike have. An operator who wants otherwise sets GOGC (and GOMEMLIMIT, a soft cap
// the collector honours whatever GOGC says); both are left alone when set.
package gcpolicy

import (
	"runtime/debug"
	"strconv"
)

// DefaultPercent is GOGC for a process whose environment sets none.
const DefaultPercent = 400

// Apply sets GOGC to DefaultPercent unless getenv("GOGC") gives one (the runtime has then
// applied it already), and returns the percent in effect (-1 when collection is off).
func Apply(getenv func(string) string) int {
	if v := getenv("GOGC"); v != "" {
		if v == "off" {
			return -1
		}
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		// The runtime ignores a GOGC it cannot read and keeps 100; so do we.
		return 100
	}
	debug.SetGCPercent(DefaultPercent)
	return DefaultPercent
}
