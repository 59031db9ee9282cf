// Package gcpolicy sets how often Handoff's processes collect garbage.
//
// Go's default (GOGC=100) collects whenever the heap has doubled its live size. A Handoff
// process keeps a small live heap (tens of megabytes: pools, caches, in-flight calls) and
// allocates fast under load (every request's messages and rows), so by default it spends about
// an eighth of its CPU marking and assisting the collector. Letting the heap grow to five times
// its live size cuts that to a fraction for a few hundred megabytes of memory. In a container
// with a memory limit, a soft limit a tenth below it makes the collector work harder as the
// heap nears it instead of the process being killed. An operator who wants otherwise sets GOGC
// and GOMEMLIMIT; each is left alone when set.
package gcpolicy

import (
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultPercent is GOGC for a process whose environment sets none.
const DefaultPercent = 400

// cgroupLimitFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// Apply sets GOGC to DefaultPercent unless getenv("GOGC") gives one (the runtime has then
// applied it already), and a soft memory limit of 90% of the container's unless getenv
// ("GOMEMLIMIT") gives one. It returns the percent in effect (-1 when collection is off).
func Apply(getenv func(string) string) int {
	applyMemoryLimit(getenv, cgroupLimitFiles)
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

// applyMemoryLimit sets the soft limit from the first of files that holds a limit, and returns
// it (0: none set).
func applyMemoryLimit(getenv func(string) string, files []string) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return 0
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n > math.MaxInt64/2 {
			return 0 // "max", or cgroup v1's way of saying no limit
		}
		limit := n / 10 * 9
		debug.SetMemoryLimit(limit)
		return limit
	}
	return 0
}
