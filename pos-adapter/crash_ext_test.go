package posadapter_test

import (
	"bufio"
	"context"
	"fmt"
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

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// The test binary doubles as a pos-adapter process: run with childEnv set, TestMain serves
// an adapter (Run and Serve) on the given address until it is killed.
const childEnv = "POS_ADAPTER_TEST_CHILD"

func init() {
	if os.Getenv(childEnv) == "" {
		return
	}
	if err := runChild(); err != nil {
		fmt.Fprintln(os.Stderr, "child adapter:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := pgdb.Open(ctx, os.Getenv("CHILD_DATABASE_URL"), os.Getenv("CHILD_SCHEMA"), posadapter.PoolOptions()...)
	if err != nil {
		return err
	}
	defer pool.Close()
	nc, err := nats.Connect(os.Getenv("CHILD_NATS_URL"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	keys, err := auth.ParseKeySet(os.Getenv("CHILD_KEYS"))
	if err != nil {
		return err
	}
	conn := deadConn(&childTB{})
	a, err := posadapter.New(posadapter.Config{Pool: pool, NC: nc, JS: js, Keys: keys, Fulfilment: conn, Inventory: anyStore{conn},
		CatchUpInterval: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	var lis net.Listener
	for range 100 {
		if lis, err = net.Listen("tcp", os.Getenv("CHILD_ADDR")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(ctx) })
	wg.Go(func() { _ = a.Serve(ctx, lis, time.Second) })
	fmt.Println("ready", lis.Addr())
	wg.Wait()
	return nil
}

// childTB is just enough of testing.TB for deadConn in the child process.
type childTB struct{ testing.TB }

func (childTB) Helper()           {}
func (childTB) Cleanup(func())    {}
func (childTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// startChild runs an adapter process on addr and waits until it serves.
func (e *env) startChild(addr, schema string) *exec.Cmd {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1",
		"CHILD_DATABASE_URL="+testenv.DatabaseURL(e.t), "CHILD_SCHEMA="+schema,
		"CHILD_NATS_URL="+e.ns.ClientURL(), "CHILD_KEYS="+e.keySpec, "CHILD_ADDR="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready ") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		e.t.Fatal("child adapter not ready within 30s")
	}
	return cmd
}

func TestAdapterProcessKilledWithSIGKILLWhileTicketsFlowLosesNoTicket(t *testing.T) {
	e := newEnv(t)
	e.stopAdapter() // the adapter runs as a child process here
	var schema string
	if err := e.pool.QueryRow(context.Background(), `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	child := e.startChild(e.addr, schema)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var terms []*reconnectingTerminal
	for _, p := range protocols {
		_, cred := e.register("T "+p.name, "crash-1")
		r := &reconnectingTerminal{seen: map[string]bool{}, orders: map[string]bool{}}
		terms = append(terms, r)
		c := e.terminal(p, cred)
		wg.Go(func() { r.run(ctx, c, "crash-1") })
	}

	const total = 200
	var want []string
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range total {
			o := order("crash-1", i)
			want = append(want, o.GetId())
			e.publish("confirmed", o, nil)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	for _, after := range []int{30, 100} {
		testenv.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
			terms[0].mu.Lock()
			defer terms[0].mu.Unlock()
			if len(terms[0].seen) < after {
				return fmt.Errorf("terminal has %d tickets, waiting for %d before the kill", len(terms[0].seen), after)
			}
			return nil
		})
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		child = e.startChild(e.addr, schema)
	}
	<-published

	for k, r := range terms {
		testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			if m := r.missing(want); len(m) > 0 {
				return fmt.Errorf("terminal %d misses %d of %d tickets, e.g. %s", k, len(m), total, m[0])
			}
			return nil
		})
		r.mu.Lock()
		if r.disorder != "" {
			t.Errorf("terminal %d: %s", k, r.disorder)
		}
		t.Logf("terminal %d: %d tickets over %d connections, %d duplicates dropped", k, len(r.seen), r.conns, r.dups)
		r.mu.Unlock()
	}
}
