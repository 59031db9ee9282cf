package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
)

// An output file that cannot be written is a bad flag value: refused up front with exit 2,
// naming the flag, as -orders -3 is. It was found only after the whole run (minutes with
// -spawn), with exit 1. A file the check had to create is not left behind.
func TestUnwritableOutputsAreBadFlags(t *testing.T) {
	noSystem := []string{"-data-dir", t.TempDir()} // no key: anything past parsing fails with 1
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	for _, args := range [][]string{
		{"load", "-out", filepath.Join(missing, "r.json")},
		{"load", "-histogram", filepath.Join(missing, "h.svg")},
		{"load", "-cpuprofile", filepath.Join(missing, "cpu.pprof")},
	} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append(args, noSystem...), noEnv, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), args[1]) {
			t.Errorf("mobile-mock %v exited %d, want 2 naming %s before any set-up; stderr: %q", args, code, args[1], stderr.String())
		}
	}
	dir := t.TempDir()
	out, svg := filepath.Join(dir, "r.json"), filepath.Join(dir, "h.svg")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), append([]string{"load", "-out", out, "-histogram", svg}, noSystem...), noEnv, &stdout, &stderr); code != 1 {
		t.Errorf("a load with no system to find exited %d, want 1: %s", code, stderr.String())
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("checking the outputs left %v behind", left)
	}
}

// A load that cannot start (no system to find) leaves -cpuprofile's file as it was: the
// profile was created before the set-up, so such a run truncated an existing profile to 0 bytes
// and left an empty new one behind, though -out and -histogram were only checked.
func TestALoadThatCannotStartLeavesTheCPUProfileAlone(t *testing.T) {
	noSystem := []string{"-data-dir", t.TempDir()} // no key: the run fails at its set-up
	dir := t.TempDir()
	old := filepath.Join(dir, "old.pprof")
	if err := os.WriteFile(old, []byte("yesterday's profile"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "new.pprof")
	for _, p := range []string{old, fresh} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), append([]string{"load", "-cpuprofile", p}, noSystem...), noEnv, &stdout, &stderr); code != 1 {
			t.Fatalf("exit %d, want 1 (no system): %s", code, stderr.String())
		}
	}
	if b, _ := os.ReadFile(old); string(b) != "yesterday's profile" {
		t.Errorf("a load that never started clobbered the existing -cpuprofile file: now %q", b)
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Errorf("a load that never started left an empty -cpuprofile file %s behind", fresh)
	}
}

// A write that fails at the end (its folder gone during the run) does not cost the other
// outputs or the verdict: the histogram was left unwritten and the exit decided by the first
// failure.
func TestAFailingOutputDoesNotCostTheOthers(t *testing.T) {
	ready, flags := startHandoff(t)
	gone, kept := t.TempDir(), t.TempDir()
	out, svg := filepath.Join(gone, "r.json"), filepath.Join(kept, "h.svg")
	args := []string{"load", "-quiet", "-basket", "-shoppers", "2", "-duration", "4s", "-out", out, "-histogram", svg,
		"-inventory", ready.ServiceAddrs[stack.TargetInventory]}
	go func() {
		time.Sleep(1500 * time.Millisecond) // the outputs are checked at once; the run lasts 4 s and more
		os.RemoveAll(gone)
	}()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append(args, flags...), noEnv, &stdout, &stderr)
	t.Logf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	if code != 1 || !strings.Contains(stderr.String(), "-out") {
		t.Errorf("-out unwritable at the end: exit %d, want 1 naming -out", code)
	}
	if _, err := os.Stat(svg); err != nil {
		t.Errorf("the histogram was not written after -out failed: %v", err)
	}
}
