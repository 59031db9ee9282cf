package system

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Discard throws away what a system spawned in dataDir leaves there, when this process must
// end at once (a second Ctrl-C) and the spawned system cannot be stopped in order: its private
// PostgreSQL server is stopped in immediate mode (no checkpoint: its data is thrown away
// anyway), killed if it has not ended within half of within, and dataDir is removed. It
// returns within about within.
func Discard(dataDir string, within time.Duration) error {
	deadline := time.Now().Add(within)
	// The cluster's server runs in <DataDir>/postgres/pgdata (stack's layout, pgcluster's
	// pgdata), and names itself in postmaster.pid there, as every PostgreSQL server does.
	pidFile := filepath.Join(dataDir, "postgres", "pgdata", "postmaster.pid")
	var errs []error
	if err := stopPostgres(pidFile, time.Now().Add(within/2)); err != nil {
		errs = append(errs, err)
	}
	// The embedded NATS may still write its store while it is removed: try again until the
	// dir is gone.
	for {
		err := os.RemoveAll(dataDir)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dataDir, err))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// stopPostgres asks the server named in pidFile for an immediate shutdown (SIGQUIT: its
// backends end at once, nothing is written), waits until it has ended (it removes pidFile
// last) or deadline passes, and then kills it.
func stopPostgres(pidFile string, deadline time.Time) error {
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil // no server runs there (yet, or any more)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", pidFile, err)
	}
	first, _, _ := bytes.Cut(data, []byte("\n"))
	pid, err := strconv.Atoi(string(bytes.TrimSpace(first)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s names no server: %q", pidFile, first)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil // ended already
	}
	if err := p.Signal(syscall.SIGQUIT); err != nil {
		return nil // ended already
	}
	for time.Now().Before(deadline) {
		if _, err := os.Stat(pidFile); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if p.Signal(syscall.Signal(0)) != nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = p.Kill() // its backends end when they find their postmaster gone
	return fmt.Errorf("postgres (pid %d) did not shut down in time and was killed", pid)
}
