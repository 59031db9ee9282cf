package load

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuUse is the CPU time spent so far: by the whole machine (every process on it, Postgres
// included) and by this process (with -spawn, the whole system but Postgres, and the load
// generator itself), and the time the hypervisor gave the machine's CPUs to others while the
// machine had work for them (steal). Each is 0 where the platform does not say. cpus is how
// many CPUs machine and stolen are of (0 where not known).
type cpuUse struct {
	machine, process, stolen time.Duration
	cpus                     int
}

// userHZ is the unit of /proc/stat: 100 ticks a second on every Linux the kernel's ABI allows
// (USER_HZ), whatever the kernel's own tick rate.
const userHZ = 100

func readCPUUse() cpuUse {
	busy, stolen, cpus := machineBusy("/proc/stat")
	return cpuUse{machine: busy, process: processCPU(), stolen: stolen, cpus: cpus}
}

// machineBusy is the time every CPU of the machine spent working (user, nice, system, irq,
// softirq) and the time stolen from them (steal), according to the stat file at path, and how
// many CPUs that is (its cpuN lines, whose sum the aggregate line is); zeros if it cannot be
// read.
//
// The count is the file's, not runtime.NumCPU(): that is the CPUs this process may run on (its
// affinity mask: taskset, a container's cpuset), while the busy time is the whole machine's,
// Postgres and every other process included, which is what a run's CPU per order is meant to
// cover. Dividing the one by the other said "157% of its 1 CPUs busy" in a pinned process.
func machineBusy(path string) (busy, stolen time.Duration, cpus int) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return 0, 0, 0
	}
	busy, stolen, err = parseCPULine(s.Text())
	if err != nil {
		return 0, 0, 0
	}
	for s.Scan() {
		if l := s.Text(); strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			cpus++
		}
	}
	if s.Err() != nil || cpus == 0 {
		return 0, 0, 0
	}
	return busy, stolen, cpus
}

// parseCPULine reads the aggregate "cpu" line of /proc/stat: its work and its steal.
//
// Steal is not work of this machine: it is time a virtual machine's CPU was ready to run and
// the hypervisor ran another machine instead. On this project's shared 2-CPU machines it came to
// a tenth of what the machine itself spent during a load run, and varied from run to run, so
// counting it as work made one build's CPU per order look different from run to run.
func parseCPULine(line string) (busy, stolen time.Duration, err error) {
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("not the aggregate cpu line: %q", line)
	}
	ticks := func(i int) (int64, error) {
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu line field %d: %w", i, err)
		}
		return n, nil
	}
	var work int64
	// user nice system idle iowait irq softirq steal: idle and iowait are no work, steal is
	// another machine's.
	for _, i := range []int{1, 2, 3, 6, 7} {
		n, err := ticks(i)
		if err != nil {
			return 0, 0, err
		}
		work += n
	}
	steal, err := ticks(8)
	if err != nil {
		return 0, 0, err
	}
	return time.Duration(work) * time.Second / userHZ, time.Duration(steal) * time.Second / userHZ, nil
}
