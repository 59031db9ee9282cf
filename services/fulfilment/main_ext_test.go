package fulfilment_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// The crash tests run fulfilment as a child process: this test binary again, with
// envChildProcess set, which makes TestMain run the service instead of the tests. The child
// reads where to connect from the environment, says "child ready" on stderr once it serves,
// and runs until killed (or SIGTERM).
const (
	envChildProcess  = "HANDOFF_FULFILMENT_TEST_CHILD"
	envChildDatabase = "HANDOFF_FULFILMENT_TEST_CHILD_DATABASE_URL"
	envChildSchema   = "HANDOFF_FULFILMENT_TEST_CHILD_SCHEMA"
	envChildNATS     = "HANDOFF_FULFILMENT_TEST_CHILD_NATS_URL"
	envChildSweep    = "HANDOFF_FULFILMENT_TEST_CHILD_SWEEP"
	envChildHoldTTL  = "HANDOFF_FULFILMENT_TEST_CHILD_HOLD_TTL"
	childReady       = "child ready, gRPC on "
)

func TestMain(m *testing.M) {
	if os.Getenv(envChildProcess) != "" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testenv.Main(m)
}

// runChild is a whole fulfilment process: pool, migrations done by the parent, NATS endpoint,
// background loops and outbox relay.
func runChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := pgdb.Open(ctx, os.Getenv(envChildDatabase), os.Getenv(envChildSchema))
	if err != nil {
		return err
	}
	defer pool.Close()
	nc, err := nats.Connect(os.Getenv(envChildNATS))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	cfg := fulfilment.Config{Pool: pool, NATS: nc, PickupCodeSecret: testSecret, Logger: log}
	fastTimers(&cfg)
	if d, err := time.ParseDuration(os.Getenv(envChildSweep)); err == nil {
		cfg.SweepInterval = d
	}
	if d, err := time.ParseDuration(os.Getenv(envChildHoldTTL)); err == nil {
		cfg.PlacementHoldTTL = d
	}
	svc, err := fulfilment.New(cfg)
	if err != nil {
		return err
	}
	rpc, err := natsrpc.AddService(nc, "fulfilment", "0.0.1", "fulfilment child", log)
	if err != nil {
		return err
	}
	if err := svc.RegisterNATS(rpc); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	svc.RegisterGRPC(srv)
	errs := make(chan error, 3)
	go func() { errs <- srv.Serve(lis) }()
	go func() { errs <- svc.Run(ctx) }()
	go func() {
		errs <- outbox.NewRelay(pool, js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}).Run(ctx)
	}()
	fmt.Fprintln(os.Stderr, childReady+lis.Addr().String())
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// child is a running fulfilment child process.
type child struct {
	cmd   *exec.Cmd
	addr  string // its gRPC address
	mu    sync.Mutex
	lines []string
	seen  *sync.Cond
	done  chan struct{}
}

// startChild starts fulfilment as a child process on e's schema and NATS server, with the
// failpoint armed ("" for none), and waits until it serves.
func (e *env) startChild(failpoint string, extraEnv ...string) *child {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envChildProcess+"=1",
		envChildDatabase+"="+testenv.DatabaseURL(e.t),
		envChildSchema+"="+e.schema,
		envChildNATS+"="+e.ns.ClientURL(),
		fulfilment.EnvFailpoint+"="+failpoint,
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	c.seen = sync.NewCond(&c.mu)
	go c.read(stderr)
	go func() { _ = cmd.Wait(); close(c.done) }()
	e.t.Cleanup(func() { c.kill() })
	if !c.waitFor(childReady, 30*time.Second) {
		e.t.Fatalf("fulfilment child did not start; it said:\n%s", c.output())
	}
	for _, l := range strings.Split(c.output(), "\n") {
		if addr, ok := strings.CutPrefix(l, childReady); ok {
			c.addr = addr
		}
	}
	// The test's shopper and staff talk to this child from now on.
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	e.orders, e.store = fulfilmentv1.NewOrderServiceClient(conn), fulfilmentv1.NewStoreOrderServiceClient(conn)
	return c
}

func (c *child) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		c.mu.Lock()
		c.lines = append(c.lines, sc.Text())
		c.seen.Broadcast()
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.lines = append(c.lines, "<eof>")
	c.seen.Broadcast()
	c.mu.Unlock()
}

// waitFor waits until the child has written a line containing text.
func (c *child) waitFor(text string, timeout time.Duration) bool {
	timer := time.AfterFunc(timeout, func() { c.mu.Lock(); c.seen.Broadcast(); c.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for _, l := range c.lines {
			if strings.Contains(l, text) {
				return true
			}
			if l == "<eof>" {
				return false
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		c.seen.Wait()
	}
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

// kill ends the child with SIGKILL, as a crash would, and waits for it.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}
