package stack_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stacktest"
)

// The private PostgreSQL dying under a running Handoff (killed, out of memory) stops Handoff
// with an error naming it, to be started again, instead of leaving it up, reporting itself
// healthy, and failing every call.
func TestHandoffStopsWhenItsPrivatePostgresDies(t *testing.T) {
	cfg := stacktest.Config(t)
	cfg.DatabaseURL = "" // the private cluster, in the data dir
	cfg.JWTKeys = "test:" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	cfg.LoadDemo = false

	_, errc, cancel := startStack(t, cfg)
	defer cancel()
	time.Sleep(3 * time.Second) // every part settled in: relays, consumers, sweepers running
	pidFile, err := os.ReadFile(filepath.Join(cfg.DataDir, "postgres", "pgdata", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidFile), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "private PostgreSQL") {
			t.Fatalf("Handoff stopped with %v; want an error naming the private PostgreSQL", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Handoff ran on a minute after its private PostgreSQL was killed")
	}
}
