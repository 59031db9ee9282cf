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
// machine had work for them (steal). Each is 0 where the platform does not say.
type cpuUse struct{ machine, process, stolen time.Duration }

// userHZ is the unit of /proc/stat: 100 ticks a second on every Linux the kernel's ABI allows
// (USER_HZ), whatever the kernel's own tick rate.
const userHZ = 100

func readCPUUse() cpuUse {
	busy, stolen := machineBusy("/proc/stat")
	return cpuUse{machine: busy, process: processCPU(), stolen: stolen}
}

// machineBusy is the time every CPU of the machine spent working (user, nice, system, irq,
// softirq) and the time stolen from them (steal), according to the stat file at path; zeros if
// it cannot be read.
func machineBusy(path string) (busy, stolen time.Duration) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, 0
	}
	busy, stolen, err = parseCPULine(line)
	if err != nil {
		return 0, 0
	}
	return busy, stolen
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
