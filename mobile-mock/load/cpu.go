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
// generator itself). Either is 0 where the platform does not say.
type cpuUse struct{ machine, process time.Duration }

// userHZ is the unit of /proc/stat: 100 ticks a second on every Linux the kernel's ABI allows
// (USER_HZ), whatever the kernel's own tick rate.
const userHZ = 100

func readCPUUse() cpuUse {
	return cpuUse{machine: machineBusy("/proc/stat"), process: processCPU()}
}

// machineBusy is the time every CPU of the machine spent busy (user, nice, system, irq,
// softirq, steal) according to the stat file at path; 0 if it cannot be read.
func machineBusy(path string) time.Duration {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0
	}
	d, err := parseCPULine(line)
	if err != nil {
		return 0
	}
	return d
}

// parseCPULine reads the aggregate "cpu" line of /proc/stat.
func parseCPULine(line string) (time.Duration, error) {
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("not the aggregate cpu line: %q", line)
	}
	var busy int64
	// user nice system idle iowait irq softirq steal: all but idle and iowait are work.
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu line field %d: %w", i, err)
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / userHZ, nil
}
