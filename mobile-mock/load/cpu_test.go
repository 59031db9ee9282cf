package load

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTheMachinesBusyTimeIsEverythingButIdleAndIOWait(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice, in 1/100 s
	got, err := parseCPULine("cpu  1000 20 300 90000 500 4 6 70 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := 14 * time.Second; got != want { // 1000+20+300+4+6+70 = 1400 ticks
		t.Errorf("busy %v, want %v", got, want)
	}
	for _, bad := range []string{"cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2\n", "intr 1 2 3 4 5 6 7 8\n", "cpu a b c d e f g h\n"} {
		if _, err := parseCPULine(bad); err == nil {
			t.Errorf("%q read as the cpu line", bad)
		}
	}
	p := filepath.Join(t.TempDir(), "stat")
	if err := os.WriteFile(p, []byte("cpu  100 0 100 5 0 0 0 0 0 0\ncpu0 100 0 100 5 0 0 0 0 0 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := machineBusy(p); got != 2*time.Second {
		t.Errorf("machineBusy = %v, want 2s", got)
	}
	if got := machineBusy(filepath.Join(t.TempDir(), "missing")); got != 0 {
		t.Errorf("machineBusy of a missing file = %v, want 0", got)
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
	none := &Result{OrdersWithTicket: 1000, Host: Host{CPUs: 2}}
	none.fillCPUPerOrder()
	if got := cpuLine(none); got != "" {
		t.Errorf("without figures the line is %q, want none", got)
	}
}
