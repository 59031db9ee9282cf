package pgcluster_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/pgcluster"
)

// helperDirEnv makes this test binary act as a process that owns a cluster
// and is then SIGKILLed by the test (see TestStartAfterOwnerWasKilled).
const helperDirEnv = "HANDOFF_PGCLUSTER_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		runHelper(dir)
		return
	}
	os.Exit(m.Run())
}

func TestDataSurvivesStopAndStart(t *testing.T) {
	requireBinaries(t)
	dir := t.TempDir()

	c := start(t, pgcluster.Options{DataDir: dir, Logger: testLogger(t)})
	exec1(t, c, "CREATE TABLE pickup (code text PRIMARY KEY)", "INSERT INTO pickup VALUES ('A1B2')")
	if err := c.Stop(t.Context()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := c.Stop(t.Context()); err != nil {
		t.Fatalf("second stop should be a no-op: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}

	c = start(t, pgcluster.Options{DataDir: dir, Logger: testLogger(t)})
	if got := pickupCode(t, c); got != "A1B2" {
		t.Fatalf("after restart: pickup code = %q, want A1B2", got)
	}
}

func TestStartAfterOwnerWasKilled(t *testing.T) {
	requireBinaries(t)
	dir := t.TempDir()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run=^$")
	helper.Env = append(os.Environ(), helperDirEnv+"="+dir)
	helper.Stderr = os.Stderr
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper did not report its server: %v", err)
	}
	serverPID, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "READY "))
	if err != nil {
		t.Fatalf("helper said %q", line)
	}

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	if runtime.GOOS == "linux" {
		// The parent-death signal must take the server down with its owner.
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if alive(serverPID) {
				return fmt.Errorf("postgres (pid %d) outlived its killed owner", serverPID)
			}
			return nil
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "pgdata", "postmaster.pid")); err != nil {
		t.Fatalf("expected the killed server's postmaster.pid to be left behind: %v", err)
	}

	c := start(t, pgcluster.Options{DataDir: dir, Logger: testLogger(t)})
	if got := pickupCode(t, c); got != "K9" {
		t.Fatalf("after the owner was killed: pickup code = %q, want K9", got)
	}
}

func TestStartRefusesDataDirOfRunningServer(t *testing.T) {
	requireBinaries(t)
	if runtime.GOOS != "linux" {
		t.Skip("detecting the live owner needs /proc")
	}
	dir := t.TempDir()
	start(t, pgcluster.Options{DataDir: dir, Ephemeral: true, Logger: testLogger(t)})

	_, err := pgcluster.Start(t.Context(), pgcluster.Options{DataDir: dir, Ephemeral: true, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "in use by a running postgres") {
		t.Fatalf("second Start on a live data dir: err = %v, want 'in use by a running postgres'", err)
	}
}

// runHelper starts a cluster, writes a row, reports the server's pid and
// waits to be killed.
func runHelper(dir string) {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err == nil {
		_, err = conn.Exec(ctx, "CREATE TABLE pickup (code text PRIMARY KEY); INSERT INTO pickup VALUES ('K9')")
		_ = conn.Close(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	pid, err := os.ReadFile(filepath.Join(dir, "pgdata", "postmaster.pid"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	first, _, _ := strings.Cut(string(pid), "\n")
	fmt.Printf("READY %s\n", first)
	select {}
}

func start(t *testing.T, opts pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	c, err := pgcluster.Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return c
}

func exec1(t *testing.T, c *pgcluster.Cluster, stmts ...string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func pickupCode(t *testing.T, c *pgcluster.Cluster) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var code string
	if err := conn.QueryRow(t.Context(), "SELECT code FROM pickup").Scan(&code); err != nil {
		t.Fatalf("read pickup code: %v", err)
	}
	return code
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := pgcluster.BinDir(); err != nil {
		// make test installs them (.ci/system-deps); their absence is a broken setup, not a pass.
		t.Fatalf("%v", err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || (stat[i+2] != 'Z' && stat[i+2] != 'X')
}

func checkFor(t *testing.T, total, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(interval)
	}
}
