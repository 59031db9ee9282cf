package stack

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/rounds"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// On shutdown the background loops (the outbox relays) run until every server has drained, so
// that what the requests finishing in the grace write is still published; on a failure they
// stop at once.
func TestLoopsOutliveTheServersDrain(t *testing.T) {
	var drained, loopEnded atomic.Int64
	s := &system{log: slog.New(slog.DiscardHandler), cfg: Config{Target: TargetAll}}
	s.addServer(func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(200 * time.Millisecond) // the grace: requests finishing
		drained.Store(time.Now().UnixNano())
		return nil
	})
	s.addLoop("relay", func(ctx context.Context) error {
		<-ctx.Done()
		loopEnded.Store(time.Now().UnixNano())
		return nil
	})
	serveThenStop(t, s)
	if loopEnded.Load() < drained.Load() {
		t.Fatalf("the loop stopped %v before the server had drained", time.Duration(drained.Load()-loopEnded.Load()))
	}

	// A failing server stops the loops at once, without a shutdown.
	failing := &system{log: slog.New(slog.DiscardHandler), cfg: Config{Target: TargetAll}}
	failing.addServer(func(context.Context) error { return errors.New("listener broke") })
	failing.addLoop("relay", func(ctx context.Context) error { <-ctx.Done(); return nil })
	errc := make(chan error, 1)
	go func() { errc <- failing.serve(t.Context(), nil) }()
	select {
	case err := <-errc:
		if err == nil || err.Error() != "listener broke" {
			t.Fatalf("serve with a failing server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failing server did not stop the loops")
	}
}

// A service's NATS endpoints drain like a server: a request in flight at shutdown is
// answered before the background loops stop, and what it commits is relayed before serve
// returns (the relay's last flush), not at the next start.
func TestWhatARequestInFlightAtShutdownCommitsIsRelayedBeforeExit(t *testing.T) {
	f := newSlowOutboxService(t)
	s := &system{log: testenv.Logger(t), cfg: Config{Target: TargetAll, ShutdownGrace: 5 * time.Second}}
	f.serveOn(s)
	if err := shutDownDuring(t, s, f.nc, f.subject, f.entered); err != nil {
		t.Fatalf("the request in flight at shutdown: %v", err)
	}
	if left := f.outboxLeft(t); left != 0 {
		t.Fatalf("%d events committed by the request in flight were still in the outbox when serve returned", left)
	}
}

// In the one-process mode a request in flight at shutdown calls the next service over NATS in
// the same process (fulfilment's place-order calls inventory's reserve): endpoints drain callers
// first, so that call is still answered and the request completes within the grace.
func TestARequestInFlightAtShutdownStillReachesTheServiceItCalls(t *testing.T) {
	nc := testenv.NATSConn(t, testenv.NATS(t))
	log := testenv.Logger(t)
	inv, err := natsrpc.AddService(nc, "inv", "0.0.1", "the callee", log)
	if err != nil {
		t.Fatal(err)
	}
	reserve := natsrpc.Subject("inv", "reserve")
	if err := natsrpc.Handle(inv, reserve, func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return req, nil
	}); err != nil {
		t.Fatal(err)
	}
	ful, err := natsrpc.AddService(nc, "ful", "0.0.1", "the caller", log)
	if err != nil {
		t.Fatal(err)
	}
	place := natsrpc.Subject("ful", "place")
	entered := make(chan struct{})
	if err := natsrpc.Handle(ful, place, func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		close(entered)
		time.Sleep(300 * time.Millisecond) // shutdown begins meanwhile
		var res wrapperspb.StringValue
		err := natsrpc.Call(ctx, nc, reserve, req, &res)
		return &res, err
	}); err != nil {
		t.Fatal(err)
	}
	s := &system{log: log, cfg: Config{Target: TargetAll, ShutdownGrace: 5 * time.Second}}
	s.serveNATS(inv) // start order: callees first
	s.serveNATS(ful)
	if err := shutDownDuring(t, s, nc, place, entered); err != nil {
		t.Fatalf("the request in flight at shutdown failed calling the next service: %v", err)
	}
}

// shutDownDuring serves s, calls subject over nc, shuts s down once the handler has entered,
// and returns the call's error once serve has returned.
func shutDownDuring(t *testing.T, s *system, nc *nats.Conn, subject string, entered <-chan struct{}) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, nil) }()
	called := make(chan error, 1)
	go func() {
		called <- natsrpc.Call(t.Context(), nc, subject, wrapperspb.String("order"), new(wrapperspb.StringValue))
	}()
	<-entered
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	return <-called
}

// The NATS endpoints drain by the end of the servers' grace, or natsDrainFloor after the servers
// if that is later: bounded (within MaxShutdown), yet a request taken in the grace's last
// moment still has time to be answered.
func TestTheNATSEndpointsDrainByTheGraceOrTheirFloor(t *testing.T) {
	const grace, floor = time.Second, 300 * time.Millisecond
	s := &system{log: slog.New(slog.DiscardHandler), cfg: Config{Target: TargetAll, ShutdownGrace: grace}, drainFloor: floor}
	var stopped, serversDone, drainBy atomic.Int64
	s.addServer(func(ctx context.Context) error {
		<-ctx.Done()
		stopped.Store(time.Now().UnixNano())
		time.Sleep(900 * time.Millisecond) // slow requests finishing in the grace
		serversDone.Store(time.Now().UnixNano())
		return nil
	})
	s.natsDrains = append(s.natsDrains, func(ctx context.Context) error {
		if d, ok := ctx.Deadline(); ok {
			drainBy.Store(d.UnixNano())
		}
		return nil
	})
	serveThenStop(t, s)
	if drainBy.Load() == 0 {
		t.Fatal("the NATS endpoints were drained without a deadline")
	}
	by := time.Unix(0, drainBy.Load())
	if late := by.Sub(time.Unix(0, stopped.Load())); late > grace+floor {
		t.Fatalf("the NATS endpoints had until %s after the stop; want at most the grace and the floor, %s", late, grace+floor)
	}
	if left := by.Sub(time.Unix(0, serversDone.Load())); left < floor {
		t.Fatalf("the NATS endpoints had %s after the servers; want at least the floor, %s", left, floor)
	}
}

// The NATS endpoints take requests while the servers drain. One taken near the end of a
// grace a server used whole (a gRPC server's GracefulStop waiting on a stream) is still
// answered, and what it commits relayed before serve returns (review of ee845ab: it was left
// in the outbox for the next start).
func TestARequestTakenLateInTheServersGraceIsAnsweredAndRelayed(t *testing.T) {
	f := newSlowOutboxService(t)
	const grace = time.Second
	s := &system{log: testenv.Logger(t), cfg: Config{Target: TargetAll, ShutdownGrace: grace}}
	s.addServer(func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(grace) // the whole grace
		return nil
	})
	f.serveOn(s)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, nil) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	time.Sleep(grace - 150*time.Millisecond) // a checkout arrives near the end of the grace
	called := make(chan error, 1)
	go func() {
		called <- natsrpc.Call(t.Context(), f.nc, f.subject, wrapperspb.String("order"), new(wrapperspb.StringValue))
	}()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if err := <-called; err != nil {
		t.Fatalf("the request taken late in the grace: %v", err)
	}
	if left := f.outboxLeft(t); left != 0 {
		t.Fatalf("%d events committed by a request taken late in the grace were left in the outbox", left)
	}
}

// Closing keeps to its budget even when a closer waits without a context (pgxpool's Close for
// a connection a handler still holds), and the private Postgres's stop gets a budget of its own,
// not what such a closer left (review of ee845ab: it was killed at once).
func TestClosingKeepsToItsBudgetAndPostgresGetsItsOwn(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	s := &system{log: slog.New(slog.DiscardHandler), cfg: Config{Target: TargetAll, ShutdownGrace: time.Second}}
	var postgresHad atomic.Int64
	s.onCloseWithin(postgresStopBudget, func(ctx context.Context) error { // as startPostgres adds it
		if d, ok := ctx.Deadline(); ok && ctx.Err() == nil {
			postgresHad.Store(int64(time.Until(d)))
		}
		return nil
	})
	s.onClose(func(context.Context) error { pool.Close(); return nil }) // as startService adds it
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	held := time.AfterFunc(closeBudget+3*time.Second, conn.Release) // a handler still running
	t.Cleanup(func() {
		if held.Stop() {
			conn.Release()
		}
	})
	began := time.Now()
	s.closeAll()
	if took := time.Since(began); took > closeBudget+time.Second {
		t.Fatalf("closing took %s behind a held connection; want within the %s budget", took, closeBudget)
	}
	if had := time.Duration(postgresHad.Load()); had < postgresStopBudget-time.Second {
		t.Fatalf("the Postgres stop had %s; want its own %s", had, postgresStopBudget)
	}
}

// Closing the NATS connection waits for its drain (handlers finishing) only until the close
// budget's end, then closes it: the client's own drain timeout is 30 s, past MaxShutdown.
func TestDrainingTheNATSConnectionEndsWithItsContext(t *testing.T) {
	nc := testenv.NATSConn(t, testenv.NATS(t))
	release, busy := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	if _, err := nc.Subscribe("stuck", func(*nats.Msg) { close(busy); <-release }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("stuck", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-busy:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never ran")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- drainConn(ctx, nc) }()
	select {
	case err := <-errc:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("drainConn past its deadline: %v; want the deadline's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drainConn still waits for a handler that does not return, past its deadline")
	}
	if !nc.IsClosed() {
		t.Fatal("the connection is still open after its drain ran out of time")
	}
}

// slowOutboxService is a service endpoint that takes 300 ms to decide and then commits an event
// to the outbox, with the relay that publishes it: what shutdown must not strand.
type slowOutboxService struct {
	pool    *pgxpool.Pool
	nc      *nats.Conn
	js      jetstream.JetStream
	rpc     *natsrpc.Service
	subject string
	entered chan struct{} // closed when the first request arrives
}

func newSlowOutboxService(t *testing.T) *slowOutboxService {
	f := &slowOutboxService{pool: testenv.Pool(t, "", nil), nc: testenv.NATSConn(t, testenv.NATS(t)), entered: make(chan struct{})}
	var err error
	if f.js, err = jetstream.New(f.nc); err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(t.Context(), f.js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	if f.rpc, err = natsrpc.AddService(f.nc, "slow", "0.0.1", "a slow service", testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	f.subject = natsrpc.Subject("slow", "place")
	var once sync.Once
	if err := natsrpc.Handle(f.rpc, f.subject, func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		once.Do(func() { close(f.entered) })
		time.Sleep(300 * time.Millisecond) // deciding the order
		return req, pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
			_, err := outbox.Enqueue(ctx, tx, streams.EventSubject("catalog", "product", "created"), req)
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

// serveOn has s drain the endpoint and run the relay, as the stack does.
func (f *slowOutboxService) serveOn(s *system) {
	s.serveNATS(f.rpc)
	s.addLoop("relay", outbox.NewRelay(f.pool, f.js, outbox.RelayConfig{Logger: s.log}).Run)
}

func (f *slowOutboxService) outboxLeft(t *testing.T) int {
	var left int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	return left
}

// serveThenStop serves s for a moment, then stops it and waits for serve to return.
func serveThenStop(t *testing.T, s *system) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, nil) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// A loop stopped mid-round records its outcomes (rounds.LastWrite) while the relays make their
// last flush, which is all the time MaxShutdown gives the loops.
func TestALoopsLastWriteFitsInTheRelaysLastFlush(t *testing.T) {
	if rounds.LastWrite > outbox.DefaultFinalFlush {
		t.Fatalf("rounds.LastWrite %v outlasts the relays' last flush %v: MaxShutdown would not hold", rounds.LastWrite, outbox.DefaultFinalFlush)
	}
}
