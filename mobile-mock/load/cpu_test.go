package load

import (
	"os"
	"path/filepath"
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
	if busy, stolen := machineBusy(p); busy != 2*time.Second || stolen != 300*time.Millisecond {
		t.Errorf("machineBusy = %v, %v; want 2s, 300ms", busy, stolen)
	}
	if busy, stolen := machineBusy(filepath.Join(t.TempDir(), "missing")); busy != 0 || stolen != 0 {
		t.Errorf("machineBusy of a missing file = %v, %v; want 0, 0", busy, stolen)
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
