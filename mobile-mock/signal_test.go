package main

import (
	"bytes"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
)

// Once the first Ctrl-C has been taken, a second SIGINT ends the process at once. The after-run
// work runs on contexts of its own (the invariant check up to a minute, the look-ups up to
// 10 s, a spawned system's stop up to a minute); with the signals still registered after the
// first (signal.NotifyContext until stop()), an operator whose run hung there could not stop it
// with Ctrl-C at all. Here inventory's address answers its first connection (the listing of the
// chain's stores, before the run) through to inventory, and every later one (the invariant
// check, after the run) takes TCP and says nothing, so CheckInvariants waits; two SIGINTs a
// second apart must end the process within 5 s.
func TestASecondCtrlCEndsTheLoadAtOnce(t *testing.T) {
	ready, flags := startHandoff(t)
	bin := filepath.Join(t.TempDir(), "mm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for first := true; ; first = false {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open; never answered unless first
			if first {
				go forward(c, ready.ServiceAddrs[stack.TargetInventory])
			}
		}
	}()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, append([]string{"load", "-quiet", "-shoppers", "1", "-in-flight", "1", "-duration", "1s", "-inventory", silent.Addr().String()}, flags...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(3 * time.Second) // the 1 s run is over: the process is in its after-run checks
	_ = cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(time.Second)
	_ = cmd.Process.Signal(syscall.SIGINT)
	sent := time.Now()
	select {
	case err := <-done:
		t.Logf("ended %v after the second SIGINT: %v\n%s%s", time.Since(sent).Round(100*time.Millisecond), err, stdout.String(), stderr.String())
		// Killed by the signal, as Go's default does (a shell reports 130).
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("ended %v; want killed by SIGINT", cmd.ProcessState)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("still running 5 s after a second SIGINT (killed)\n%s%s", stdout.String(), stderr.String())
	}
}

// forward relays c to addr both ways until either side ends.
func forward(c net.Conn, addr string) {
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, c) }()
	_, _ = io.Copy(c, up)
}
