package load

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTheMachinesBusyTimeIsEverythingButIdleIOWaitAndSteal(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice, in 1/100 s
	busy, stolen, err := parseCPULine("cpu  1000 20 300 90000 500 4 6 70 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := 13300 * time.Millisecond; busy != want { // 1000+20+300+4+6 = 1330 ticks
		t.Errorf("busy %v, want %v", busy, want)
	}
	if want := 700 * time.Millisecond; stolen != want {
		t.Errorf("stolen %v, want %v", stolen, want)
	}
	for _, bad := range []string{"cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2\n", "intr 1 2 3 4 5 6 7 8\n", "cpu a b c d e f g h\n", "cpu 1 2 3 4 5 6 7 h\n"} {
		if _, _, err := parseCPULine(bad); err == nil {
			t.Errorf("%q read as the cpu line", bad)
		}
	}
	p := filepath.Join(t.TempDir(), "stat")
	if err := os.WriteFile(p, []byte("cpu  100 0 100 5 0 0 0 30 0 0\ncpu0 100 0 100 5 0 0 0 30 0 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if busy, stolen, cpus := machineBusy(p); busy != 2*time.Second || stolen != 300*time.Millisecond || cpus != 1 {
		t.Errorf("machineBusy = %v, %v, %d CPUs; want 2s, 300ms, 1", busy, stolen, cpus)
	}
	if busy, stolen, cpus := machineBusy(filepath.Join(t.TempDir(), "missing")); busy != 0 || stolen != 0 || cpus != 0 {
		t.Errorf("machineBusy of a missing file = %v, %v, %d; want 0, 0, 0", busy, stolen, cpus)
	}
}

func TestCPUPerOrderIsPrintedOnlyWhenKnown(t *testing.T) {
	res := &Result{OrdersWithTicket: 1000, Host: Host{CPUs: 2, MachineCPUSeconds: 6.5, ProcessCPUSeconds: 3.25, CPUWindowSeconds: 5}}
	res.fillCPUPerOrder()
	if res.CPUPerOrder.MachineMS != 6.5 || res.CPUPerOrder.ProcessMS != 3.25 {
		t.Fatalf("CPU per order %+v, want 6.5 ms machine, 3.25 ms process", res.CPUPerOrder)
	}
	if got := cpuLine(res); got != "  CPU per order         6.50 ms of the machine's (65% of its 2 CPUs busy), 3.25 ms of it in this process\n" {
		t.Errorf("line %q", got)
	}
	res.Host.StolenCPUSeconds = 0.8
	if got := cpuLine(res); got != "  CPU per order         6.50 ms of the machine's (65% of its 2 CPUs busy, 8% more taken by the hypervisor), 3.25 ms of it in this process\n" {
		t.Errorf("line with steal %q", got)
	}
	none := &Result{OrdersWithTicket: 1000, Host: Host{CPUs: 2}}
	none.fillCPUPerOrder()
	if got := cpuLine(none); got != "" {
		t.Errorf("without figures the line is %q, want none", got)
	}
}

// statCPUs is how many CPUs the aggregate "cpu" line of /proc/stat sums: its cpuN lines.
func statCPUs(t *testing.T) int {
	f, err := os.Open("/proc/stat")
	if err != nil {
		t.Skip("no /proc/stat")
	}
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); {
		if l := s.Text(); strings.HasPrefix(l, "cpu") && !strings.HasPrefix(l, "cpu ") {
			n++
		}
	}
	return n
}

// The CPU line divides the machine's busy time (/proc/stat's aggregate line: every CPU of the
// machine) by a capacity of the window times Host.CPUs. That was runtime.NumCPU(), the CPUs this
// process may run on: in a process pinned to fewer (taskset, a container's --cpuset-cpus) the
// line said e.g. "157% of its 1 CPUs busy". This runs itself pinned to one CPU and checks that
// the result's CPU count covers the CPUs whose time MachineCPUSeconds sums.
func TestMachineCPUTimeAndCPUCountCoverTheSameCPUs(t *testing.T) {
	if os.Getenv("LOAD_TEST_PINNED_CPU") == "" {
		if statCPUs(t) < 2 {
			t.Skip("needs a machine of 2 CPUs or more")
		}
		if _, err := exec.LookPath("taskset"); err != nil {
			t.Skip("no taskset")
		}
		cmd := exec.Command("taskset", "-c", "0", os.Args[0], "-test.run", "^TestMachineCPUTimeAndCPUCountCoverTheSameCPUs$", "-test.v")
		cmd.Env = append(os.Environ(), "LOAD_TEST_PINNED_CPU=1")
		out, err := cmd.CombinedOutput()
		t.Logf("pinned to CPU 0:\n%s", out)
		if err != nil {
			t.Errorf("pinned run failed: %v", err)
		}
		return
	}
	// The child: a result as run.result makes it (no inventory to check, nothing measured).
	r := &run{fleet: &fleet{stores: map[string]*storeTerminal{}}, errors: map[string]uint64{}, rejects: map[string]uint64{},
		units: map[stockKey]int64{}, initial: map[stockKey]int64{}, snapshot: map[string]bool{}}
	r.cpuStart = readCPUUse()
	res := r.result(t.Context())
	if want := statCPUs(t); res.Host.CPUs != want {
		t.Errorf("Host.CPUs = %d, but MachineCPUSeconds is the busy time of all %d CPUs of /proc/stat: the CPU line's %% busy and capacity mix the two", res.Host.CPUs, want)
	}
}

// The CPU count is the stat file's cpuN lines, those its aggregate line sums; not its other
// lines starting "cpu" (none today) nor the aggregate itself.
func TestTheMachinesCPUsAreTheCPULinesOfItsStat(t *testing.T) {
	p := filepath.Join(t.TempDir(), "stat")
	stat := "cpu  300 0 300 15 0 0 0 0 0 0\ncpu0 100 0 100 5 0 0 0 0 0 0\ncpu1 100 0 100 5 0 0 0 0 0 0\ncpu3 100 0 100 5 0 0 0 0 0 0\nintr 1 2 3\nctxt 12\n"
	if err := os.WriteFile(p, []byte(stat), 0o600); err != nil {
		t.Fatal(err)
	}
	if busy, _, cpus := machineBusy(p); busy != 6*time.Second || cpus != 3 {
		t.Errorf("machineBusy = %v of %d CPUs; want 6s of 3", busy, cpus)
	}
}
