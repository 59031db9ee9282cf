package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// A load run with -spawn and no database starts a private PostgreSQL cluster in a temporary
// data dir. A second Ctrl-C ends the process at once, but not before a fast cleanup: the
// cluster's server stopped (immediate shutdown) and the data dir removed. Ended by the signal
// alone, the dir (a database cluster, an embedded NATS store) stayed behind at every such run.
func TestASecondCtrlCLeavesNoSpawnedDataDirOrPostgresBehind(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "mm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// Short: the cluster's socket goes in a dir made in here, within sun_path's 107 bytes.
	tmp, err := os.MkdirTemp("", "mm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmp) })
	// The private cluster's server runs as an unprivileged account when tests run as root: it
	// must reach the data dir made in here.
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "load", "-spawn", "-quiet", "-shoppers", "1", "-in-flight", "1", "-duration", "5m")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "TMPDIR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var out testenv.LockedBuffer
	ready := make(chan string, 1)
	go func() {
		dirRE := regexp.MustCompile(`data in (\S+)\)`)
		var dir string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			_, _ = out.Write([]byte(sc.Text() + "\n"))
			if m := dirRE.FindStringSubmatch(sc.Text()); m != nil {
				dir = m[1]
			}
			if strings.Contains(sc.Text(), "Handoff ready") {
				ready <- dir
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		done <- cmd.Wait()
	}()
	var dir string
	select {
	case dir = <-ready:
	case err := <-done:
		t.Fatalf("ended before Handoff was ready: %v\n%s", err, out.String())
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("Handoff not ready within 3 minutes\n%s", out.String())
	}
	if dir == "" || !strings.HasPrefix(dir, tmp) {
		t.Fatalf("spawned data dir %q, want one in %s\n%s", dir, tmp, out.String())
	}
	pgdata := filepath.Join(dir, "postgres", "pgdata") // see internal/stack and pgcluster
	if pids := postgresOf(pgdata); len(pids) == 0 {
		t.Fatalf("no postgres serves %s: the run did not use a private cluster\n%s", pgdata, out.String())
	}
	time.Sleep(time.Second) // shoppers at work
	_ = cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(200 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("ended %v; want killed by SIGINT", cmd.ProcessState)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("still running 10 s after a second SIGINT (killed)\n%s", out.String())
	}
	// A server's backends leave once their postmaster is gone; give them a moment.
	deadline := time.Now().Add(5 * time.Second)
	for len(postgresOf(pgdata)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pids := postgresOf(pgdata); len(pids) > 0 {
		t.Errorf("postgres processes %v of %s still running after the second SIGINT", pids, pgdata)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the spawned data dir %s is still there after the second SIGINT (%v)\n%s", dir, err, out.String())
	}
}

// postgresOf lists the postgres processes whose working directory is pgdata (the postmaster
// and its backends chdir there), or was, before it was removed.
func postgresOf(pgdata string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || (strings.TrimSpace(string(comm)) != "postgres" && strings.TrimSpace(string(comm)) != "postmaster") {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := strings.LastIndexByte(string(stat), ')'); err != nil || i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err == nil && strings.TrimSuffix(cwd, " (deleted)") == pgdata {
			pids = append(pids, pid)
		}
	}
	return pids
}
