// Package pgcluster owns a private PostgreSQL cluster started from the
// machine's server binaries: the one-process mode (handoff all) uses it when no
// DATABASE_URL is given, and tests use it on machines without a Postgres
// server. It is for development and tests: it trusts every local connection
// and listens on 127.0.0.1 only.
//
// Layout of Options.DataDir:
//
//	pgdata/        the cluster (initdb'd on first use, reused afterwards)
//	run/           the server's unix socket (or a short /tmp dir, see below)
//	postgres.log   the server's output, appended across runs
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the cluster's superuser role; connections need no password.
const Superuser = "postgres"

const (
	// readyTimeout bounds the wait for the first accepted connection; crash
	// recovery of a dev cluster is seconds, a hung server should not hang us.
	readyTimeout = 2 * time.Minute
	// stopTimeout bounds a fast shutdown when the caller's ctx has no deadline.
	stopTimeout = 30 * time.Second
	// retryWindow is how long Start keeps retrying a launch that failed for a
	// passing reason (port taken, old backends still leaving shared memory).
	retryWindow = 15 * time.Second
	// maxSocketPath is the limit of sun_path (108 bytes with the NUL).
	maxSocketPath = 107
)

// Options configure Start.
type Options struct {
	// DataDir holds the cluster; created if missing.
	DataDir string
	// Port on 127.0.0.1; 0 picks a free one at every start.
	Port int
	// Ephemeral trades durability for speed (fsync, synchronous_commit and
	// full_page_writes off): for tests, never for data that must survive.
	Ephemeral bool
	// Logger receives lifecycle messages, and the server's output at debug level.
	Logger *slog.Logger
}

// Cluster is a running postgres process owned by this process.
type Cluster struct {
	dataDir   string
	pgdata    string
	socketDir string
	ownSocket bool // socketDir is a /tmp dir we made and must remove
	port      int
	logger    *slog.Logger
	out       *serverOutput

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start initialises the cluster in opts.DataDir on first use, starts postgres
// as a child process and returns once it accepts connections.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.DataDir == "" {
		return nil, errors.New("pgcluster: Options.DataDir is required")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "pgcluster")

	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: resolve data dir: %w", err)
	}
	pgdata := filepath.Join(dataDir, "pgdata")
	binDir, err := binDirFor(pgdata)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("pgcluster: create data dir: %w", err)
	}

	// PostgreSQL refuses to run as root, so root runs it as another account.
	acct, err := serverAccount(pgdata)
	if err != nil {
		return nil, err
	}
	if acct != nil {
		if err := makeReachable(dataDir, acct, logger); err != nil {
			return nil, err
		}
		if err := os.Chown(dataDir, int(acct.uid), int(acct.gid)); err != nil {
			return nil, fmt.Errorf("pgcluster: hand data dir to %s: %w", acct, err)
		}
	}

	if _, err := os.Stat(filepath.Join(pgdata, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := initCluster(ctx, binDir, dataDir, pgdata, acct, opts.Ephemeral, logger); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("pgcluster: inspect %s: %w", pgdata, err)
	}

	c := &Cluster{dataDir: dataDir, pgdata: pgdata, logger: logger}
	if err := c.makeSocketDir(acct); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(filepath.Join(dataDir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.removeSocketDir()
		return nil, fmt.Errorf("pgcluster: open server log: %w", err)
	}
	c.out = &serverOutput{logger: logger, file: logFile}

	started := time.Now()
	for {
		err = c.launch(ctx, binDir, opts, acct)
		if err == nil {
			logger.Info("postgres started", "data_dir", dataDir, "port", c.port, "pid", c.cmd.Process.Pid)
			return c, nil
		}
		var le *launchError
		if !errors.As(err, &le) || !le.retryable(opts.Port == 0) ||
			time.Since(started) > retryWindow || ctx.Err() != nil {
			break
		}
		logger.Debug("postgres launch failed, retrying", "err", err)
		time.Sleep(300 * time.Millisecond)
	}
	c.removeSocketDir()
	_ = logFile.Close()
	return nil, err
}

// URL is a connection URL for database on this cluster, as the superuser.
func (c *Cluster) URL(database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.port, url.PathEscape(database))
}

// Done is closed when the server process has exited, for whatever reason.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Stop asks for a fast shutdown (SIGINT: sessions are cut, data is flushed)
// and waits for the server to exit; it kills it when ctx ends or, without a
// deadline, after 30s. Safe to call more than once.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *Cluster) stop(ctx context.Context) error {
	defer c.removeSocketDir()
	defer c.out.close()

	select {
	case <-c.done:
		return c.exitError("postgres had already exited")
	default:
	}
	if err := interrupt(c.cmd.Process); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgcluster: signal postgres to stop: %w", err)
	}
	timeout := stopTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-c.done:
		c.logger.Info("postgres stopped", "data_dir", c.dataDir)
		return c.exitError("postgres exited uncleanly")
	case <-timer.C:
	case <-ctx.Done():
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	c.logger.Warn("postgres did not stop in time and was killed", "data_dir", c.dataDir)
	return fmt.Errorf("pgcluster: postgres did not stop within %s and was killed", timeout.Round(time.Millisecond))
}

func (c *Cluster) exitError(what string) error {
	if c.waitErr == nil {
		return nil
	}
	return fmt.Errorf("pgcluster: %s: %w\n%s", what, c.waitErr, c.out.tail())
}

// launch starts one postgres process and waits until it accepts connections.
func (c *Cluster) launch(ctx context.Context, binDir string, opts Options, acct *account) error {
	if err := clearStalePID(c.pgdata, c.logger); err != nil {
		return err
	}
	c.port = opts.Port
	if c.port == 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.port = port
	}

	settings := []string{
		"listen_addresses=127.0.0.1",
		"unix_socket_directories=" + c.socketDir,
		"max_connections=200",
	}
	if opts.Ephemeral {
		settings = append(settings,
			"fsync=off", "synchronous_commit=off", "full_page_writes=off",
			// Several test binaries may each run a cluster at once.
			"shared_buffers=32MB")
	}
	args := []string{"-D", c.pgdata, "-p", strconv.Itoa(c.port)}
	for _, s := range settings {
		args = append(args, "-c", s)
	}

	// Not exec.CommandContext: ctx bounds the start, not the server's life.
	cmd := exec.Command(binary(binDir, "postgres"), args...)
	cmd.Dir = c.dataDir
	cmd.Env = childEnv()
	cmd.Stdout = c.out
	cmd.Stderr = c.out
	// Backends inherit the output pipe; do not let a straggler hold Wait.
	cmd.WaitDelay = 5 * time.Second
	configureServerProcess(cmd, acct)
	c.out.resetTail()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgcluster: run postgres: %w", err)
	}
	c.cmd = cmd
	c.done = make(chan struct{})
	c.waitErr = nil
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()

	if err := c.waitReady(ctx); err != nil {
		_ = cmd.Process.Kill()
		<-c.done
		return err
	}
	return nil
}

// waitReady waits until our postgres accepts connections. It asks through the unix socket in
// c.socketDir, a directory only our postmaster puts a socket in: over TCP, 127.0.0.1:port may
// be answered by another server holding the port while ours fails to bind it.
func (c *Cluster) waitReady(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: connection settings: %w", err)
	}
	cfg.Host = c.socketDir
	cfg.Fallbacks = nil
	cfg.TLSConfig = nil
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for {
		select {
		case <-c.done:
			return &launchError{err: c.waitErr, output: c.out.tail(), port: c.port}
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: waiting for postgres to accept connections: %w", ctx.Err())
		default:
		}
		attemptCtx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.ConnectConfig(attemptCtx, cfg)
		cancel()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: postgres did not accept connections within %s: %w\n%s", readyTimeout, lastErr, c.out.tail())
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-c.done:
		case <-ctx.Done():
		}
	}
}

// ErrPortInUse is wrapped by Start's error when postgres could not listen on Options.Port
// because another program holds it.
var ErrPortInUse = errors.New("port in use")

// launchError is postgres exiting before it was ready.
type launchError struct {
	err    error
	output string // the server's output of this launch
	port   int
}

func (e *launchError) Error() string {
	if e.portInUse() {
		return fmt.Sprintf("pgcluster: postgres could not listen on 127.0.0.1:%d, which another program holds (its log: %s)\n%s",
			e.port, e.reason(), e.output)
	}
	return fmt.Sprintf("pgcluster: postgres exited during start (%v): %s\n%s", e.err, e.reason(), e.output)
}

func (e *launchError) Unwrap() []error {
	if e.portInUse() {
		return []error{e.err, ErrPortInUse}
	}
	return []error{e.err}
}

func (e *launchError) portInUse() bool {
	return strings.Contains(e.output, "could not bind") && strings.Contains(e.output, "already in use")
}

// reason is the line of the server's output that says why it stopped: the failed bind, else
// the first FATAL or PANIC, else its last line.
func (e *launchError) reason() string {
	lines := strings.Split(e.output, "\n")
	for _, want := range []string{"could not bind", "FATAL:", "PANIC:"} {
		for _, l := range lines {
			if strings.Contains(l, want) {
				return strings.TrimSpace(l)
			}
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return "no output; see postgres.log in the data directory"
}

// retryable reports a passing cause: a port picked by us and taken since, or
// backends of a killed server still detaching from shared memory.
func (e *launchError) retryable(portWasPicked bool) bool {
	if portWasPicked && (strings.Contains(e.output, "could not bind") || strings.Contains(e.output, "already in use")) {
		return true
	}
	return strings.Contains(e.output, "pre-existing shared memory block")
}

func initCluster(ctx context.Context, binDir, dataDir, pgdata string, acct *account, ephemeral bool, logger *slog.Logger) error {
	// initdb into a side directory and rename: a run killed half-way leaves
	// no half-made cluster that would look real next time.
	staging := filepath.Join(dataDir, "pgdata.initdb")
	if err := os.RemoveAll(staging); err != nil {
		return fmt.Errorf("pgcluster: clear unfinished initdb: %w", err)
	}
	args := []string{"-D", staging, "-A", "trust", "-U", Superuser, "-E", "UTF8", "--locale=C"}
	if ephemeral {
		args = append(args, "--no-sync")
	}
	logger.Info("initialising postgres cluster", "data_dir", dataDir)
	cmd := exec.CommandContext(ctx, binary(binDir, "initdb"), args...)
	cmd.Dir = dataDir
	cmd.Env = childEnv()
	configureServerProcess(cmd, acct)
	out, err := cmd.CombinedOutput()
	logger.Debug("initdb output", "output", string(out))
	if err != nil {
		return fmt.Errorf("pgcluster: initdb in %s: %w\n%s", dataDir, err, lastLines(string(out), 15))
	}
	if err := os.Rename(staging, pgdata); err != nil {
		return fmt.Errorf("pgcluster: move new cluster into place: %w", err)
	}
	return nil
}

func (c *Cluster) makeSocketDir(acct *account) error {
	dir := filepath.Join(c.dataDir, "run")
	if len(dir)+len("/.s.PGSQL.65535.lock") > maxSocketPath {
		tmp, err := os.MkdirTemp("", "handoff-pg-")
		if err != nil {
			return fmt.Errorf("pgcluster: create socket dir: %w", err)
		}
		dir, c.ownSocket = tmp, true
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: create socket dir: %w", err)
	}
	if acct != nil {
		if err := os.Chown(dir, int(acct.uid), int(acct.gid)); err != nil {
			return fmt.Errorf("pgcluster: hand socket dir to %s: %w", acct, err)
		}
	}
	c.socketDir = dir
	return nil
}

func (c *Cluster) removeSocketDir() {
	if c.ownSocket {
		_ = os.RemoveAll(c.socketDir)
	}
}

// clearStalePID removes a postmaster.pid left by a killed server, once no
// process of that server still runs in the data directory (postgres would
// otherwise refuse to start when the pid was reused or is an unreaped
// zombie). Where processes cannot be inspected, postgres decides: it removes
// a dead owner's file itself after checking shared memory is not in use.
func clearStalePID(pgdata string, logger *slog.Logger) error {
	pidFile := filepath.Join(pgdata, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("pgcluster: read %s: %w", pidFile, err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))

	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, known := serverProcesses(pgdata)
		if !known {
			return nil
		}
		for _, p := range pids {
			if p == pid {
				return fmt.Errorf("pgcluster: data directory %s is in use by a running postgres (pid %d); stop it first", pgdata, pid)
			}
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: processes of an old server (pids %v) still run in %s", pids, pgdata)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pgcluster: remove stale postmaster.pid: %w", err)
	}
	logger.Info("removed stale postmaster.pid left by a killed server", "pid", pid, "data_dir", pgdata)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// childEnv drops PG* variables so the caller's libpq settings cannot steer
// initdb or the server.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// serverOutput receives the server's stdout and stderr: it appends them to
// postgres.log, logs each line at debug level, and keeps the last lines for
// error messages.
type serverOutput struct {
	logger *slog.Logger

	mu      sync.Mutex
	file    *os.File
	partial []byte
	lines   []string
}

const tailLines = 20

func (o *serverOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		_, _ = o.file.Write(p)
	}
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		line := string(o.partial[:i])
		o.partial = o.partial[i+1:]
		o.logger.Debug(line, "source", "postgres")
		o.lines = append(o.lines, line)
		if len(o.lines) > tailLines {
			o.lines = o.lines[len(o.lines)-tailLines:]
		}
	}
	return len(p), nil
}

func (o *serverOutput) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(append(o.lines[:len(o.lines):len(o.lines)], string(o.partial)), "\n")
}

func (o *serverOutput) resetTail() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lines, o.partial = nil, nil
}

func (o *serverOutput) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		_ = o.file.Close()
		o.file = nil
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
