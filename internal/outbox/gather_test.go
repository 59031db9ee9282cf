package outbox_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// trickle is a steady stream of single-event transactions against one relay, with the wait of
// each event from its commit until a subscriber of its subject has it, and the relay's rounds.
type trickle struct {
	rounds, relayed atomic.Int64
	mu              sync.Mutex
	committed       map[string]time.Time // by event id
	received        map[string]time.Time // by event id, the first time
	waits           []time.Duration
}

// syncedNATS is testenv.NATS syncing every JetStream write before acknowledging it, as
// Handoff's own server and its recommended production configuration do: the relay's rounds
// then take as long as they do in production.
func syncedNATS(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "synced", Host: "127.0.0.1", Port: -1, JetStream: true, SyncAlways: true,
		StoreDir: t.TempDir(), JetStreamMaxMemory: 256 << 20, JetStreamMaxStore: 1 << 30, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	return s
}

// runTrickle runs a relay configured with cfg while 16 writers commit rate transactions a
// second for d, each with perTx events, and returns once every event has been published. The
// writers' events come from sources event sources (services), each of which NOTIFYs once per
// NotifyGap: as many as there are copies of the writing service.
func runTrickle(t testing.TB, cfg outbox.RelayConfig, rate, perTx, sources int, d time.Duration) *trickle {
	t.Helper()
	e := env{pool: testenv.Pool(t, "", nil), nats: syncedNATS(t)}
	e.js = newJS(t, e.nats)
	if err := streams.Ensure(t.Context(), e.js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	tr := &trickle{committed: map[string]time.Time{}, received: map[string]time.Time{}}
	nc := testenv.NATSConn(t, e.nats)
	sub, err := nc.Subscribe("handoff.>", func(m *nats.Msg) {
		now := time.Now()
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if id := m.Header.Get(jetstream.MsgIDHeader); tr.received[id].IsZero() {
			tr.received[id] = now
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg.Logger = testenv.Logger(t)
	r := outbox.NewRelay(e.pool, e.js, cfg)
	outbox.SetOnRound(r, func(n int) { tr.rounds.Add(1); tr.relayed.Add(int64(n)) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Relay.Run: %v", err)
		}
	}()
	time.Sleep(100 * time.Millisecond) // past the start-up rounds
	tr.rounds.Store(0)

	const writers = 16
	every := time.Duration(writers) * time.Second / time.Duration(rate)
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			next := time.Now().Add(time.Duration(w) * every / writers)
			for i := 0; time.Now().Before(end); i++ {
				time.Sleep(time.Until(next))
				next = next.Add(every)
				values := make([]string, perTx)
				for k := range values {
					values[k] = fmt.Sprint("latte ", w, " ", i, " ", k)
				}
				ids := enqueueOn(t, e.pool, streams.EventSubject(sourceNames[w%sources], "product", "created"), values...)
				now := time.Now()
				tr.mu.Lock()
				for _, id := range ids {
					tr.committed[id] = now
				}
				tr.mu.Unlock()
			}
		})
	}
	wg.Wait()
	testenv.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for id := range tr.committed {
			if _, ok := tr.received[id]; !ok {
				return fmt.Errorf("event %s not received", id)
			}
		}
		return nil
	})
	for id, c := range tr.committed {
		// A commit is timed after it returns: an event the relay took at once may be there
		// before.
		tr.waits = append(tr.waits, max(tr.received[id].Sub(c), 0))
	}
	slices.Sort(tr.waits)
	return tr
}

// sourceNames are services whose events the events stream stores.
var sourceNames = []string{"catalog", "inventory", "cart", "fulfilment"}

// enqueueOn commits one transaction holding one event on subject per value and returns the
// event ids in order.
func enqueueOn(t testing.TB, pool *pgxpool.Pool, subject string, values ...string) []string {
	t.Helper()
	var ids []string
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		for _, v := range values {
			id, err := outbox.Enqueue(context.Background(), tx, subject, wrapperspb.String(v))
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return ids
}

func (tr *trickle) quantile(q float64) time.Duration {
	return tr.waits[min(len(tr.waits)-1, int(q*float64(len(tr.waits))))]
}

// BenchmarkRelayGather measures, for a few values of RelayConfig.Gather, how many rounds a
// relay makes per event and how long events wait (commit to subscriber) under a steady
// stream of two-event transactions from 16 writers, at the rates of a service at 300 and 700
// checkouts a second, JetStream syncing every write. Each case runs HANDOFF_BENCH_SECONDS
// (default 3) whatever b.N.
func BenchmarkRelayGather(b *testing.B) {
	seconds := 3
	if v := os.Getenv("HANDOFF_BENCH_SECONDS"); v != "" {
		fmt.Sscan(v, &seconds)
	}
	for _, tc := range []struct{ rate, sources int }{{300, 1}, {700, 1}, {700, 4}} {
		for _, g := range []time.Duration{-1, 2 * time.Millisecond, 3 * time.Millisecond, 4 * time.Millisecond, 5 * time.Millisecond} {
			b.Run(fmt.Sprintf("rate=%d/sources=%d/gather=%v", tc.rate, tc.sources, max(g, 0)), func(b *testing.B) {
				rate := tc.rate
				tr := runTrickle(b, outbox.RelayConfig{Gather: g}, rate, 2, tc.sources, time.Duration(seconds)*time.Second)
				events := len(tr.waits)
				b.ReportMetric(float64(tr.rounds.Load())/float64(events), "rounds/event")
				b.ReportMetric(float64(tr.quantile(0.5).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(tr.quantile(0.99).Microseconds())/1000, "p99-ms")
				b.Logf("gather %v, %d transactions/s from %d sources: %d events in %d rounds (%.2f events a round), wait p50 %v p99 %v",
					max(g, 0), rate, tc.sources, events, tr.rounds.Load(), float64(tr.relayed.Load())/float64(tr.rounds.Load()), tr.quantile(0.5), tr.quantile(0.99))
			})
		}
	}
}

// relayCounts runs r until the test ends, counting its rounds.
func relayCounts(t *testing.T, r *outbox.Relay) *atomic.Int64 {
	t.Helper()
	var rounds atomic.Int64
	outbox.SetOnRound(r, func(int) { rounds.Add(1) })
	runRelay(t, r)
	return &rounds
}

// waitListening waits until a relay of pool's schema LISTENs, so that a NOTIFY wakes it.
func waitListening(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var channel string
	if err := pool.QueryRow(t.Context(), `SELECT `+outbox.ChannelSQL).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var n int
		err := pool.QueryRow(t.Context(),
			`SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND (query = format('LISTEN %I', $1::text) OR query = format('LISTEN "%s"', $1::text))`, channel).Scan(&n)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d connections listening on %s", n, channel)
		}
		return nil
	})
	return channel
}

// While events trickle in and the relay is woken far more often than they come (the NOTIFYs of
// many writer copies), a round waits Gather after one that relayed a few events, so rounds
// carry several events instead of one each; and every event still goes out as it is notified
// (the test logs the waits: about Gather plus NotifyGap on a quiet machine).
func TestRelayGathersEventsWhileTheyTrickleIn(t *testing.T) {
	e := setup(t)
	const gather = 10 * time.Millisecond
	rounds := relayCounts(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute, Gather: gather}))
	channel := waitListening(t, e.pool)

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() { // a NOTIFY every millisecond
		for ctx.Err() == nil {
			_, _ = e.pool.Exec(ctx, `SELECT pg_notify($1, '')`, channel)
			time.Sleep(time.Millisecond)
		}
	})

	committed := map[string]time.Time{}
	var mu sync.Mutex
	received := map[string]time.Time{}
	nc := testenv.NATSConn(t, e.nats)
	sub, err := nc.Subscribe(productCreated, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if id := m.Header.Get(jetstream.MsgIDHeader); received[id].IsZero() {
			received[id] = time.Now()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	rounds.Store(0)

	const events = 300 // one every 2ms
	next := time.Now()
	for i := range events {
		time.Sleep(time.Until(next))
		next = next.Add(2 * time.Millisecond)
		ids := enqueue(t, e.pool, fmt.Sprint("flat white ", i))
		mu.Lock()
		committed[ids[0]] = time.Now()
		mu.Unlock()
	}
	waitForStreamCount(t, e.js, events, 10*time.Second)
	stop()
	n := rounds.Load()
	mu.Lock()
	defer mu.Unlock()
	var waits []time.Duration
	for id, c := range committed {
		waits = append(waits, max(received[id].Sub(c), 0))
	}
	slices.Sort(waits)
	t.Logf("%d events in %d rounds; wait p50 %v p99 %v max %v", events, n, waits[len(waits)/2], waits[len(waits)*99/100], waits[len(waits)-1])
	// Without gathering, every wake-up is a round: more rounds than events.
	if n > events/3 {
		t.Fatalf("%d rounds for %d events; want rounds of several events", n, events)
	}
	// Woken, not polled (the poll is a minute away): the bound is far above Gather plus NotifyGap
	// (typically tens of ms here), so that a shared, busy machine does not fail it.
	if p99 := waits[len(waits)*99/100]; p99 > 2*time.Second {
		t.Fatalf("wait p99 %v; want the events relayed as they were notified, not at a poll", p99)
	}
}

// A lone event does not wait for Gather: only a round right after one that relayed something
// does, and that wait is bounded by it.
func TestRelayPublishesALoneEventWithoutGathering(t *testing.T) {
	e := setup(t)
	const gather = 3 * time.Second // far above what a busy machine adds to a lone event (154 ms seen at load average 10)
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute, Gather: gather}))
	waitListening(t, e.pool)
	time.Sleep(outbox.NotifyGap) // this process's last NOTIFY slot has passed: the event below NOTIFYs

	start := time.Now()
	enqueue(t, e.pool, "ristretto")
	waitForStreamCount(t, e.js, 1, 5*time.Second)
	lone := time.Since(start)
	// The next one, right behind, waits out the gather.
	start = time.Now()
	enqueue(t, e.pool, "lungo")
	waitForStreamCount(t, e.js, 2, 10*time.Second)
	behind := time.Since(start)
	t.Logf("lone event published %v after its commit; the next, right behind, %v", lone, behind)
	if lone > gather/2 {
		t.Fatalf("a lone event took %v; want it published without waiting for Gather (%v)", lone, gather)
	}
	if behind > gather+outbox.NotifyGap+time.Second {
		t.Fatalf("an event right behind another took %v; want at most about Gather (%v)", behind, gather)
	}
}

// After a busy round the relay waits BusyGather, so that its next round can be big enough for
// an atomic batch; after a round of one event it waits only Gather.
func TestRelayWaitsLongerAfterABusyRound(t *testing.T) {
	e := setup(t)
	const busyGather = 300 * time.Millisecond
	r := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute, Gather: time.Millisecond, BusyGather: busyGather})
	type round struct {
		n   int
		end time.Time
	}
	rounds := make(chan round, 16)
	outbox.SetOnRound(r, func(n int) {
		if n > 0 {
			rounds <- round{n, time.Now()}
		}
	})
	runRelay(t, r)
	waitListening(t, e.pool)
	next := func(want int) round {
		t.Helper()
		select {
		case rd := <-rounds:
			if rd.n != want {
				t.Fatalf("a round relayed %d events, want %d", rd.n, want)
			}
			return rd
		case <-time.After(10 * time.Second):
			t.Fatalf("no round of %d events within 10s", want)
			return round{}
		}
	}

	enqueue(t, e.pool, "a", "b", "c", "d", "e", "f", "g", "h", "i", "j")
	busy := next(10)
	enqueue(t, e.pool, "k")
	afterBusy := next(1)
	enqueue(t, e.pool, "l")
	afterLone := next(1)
	waited, short := afterBusy.end.Sub(busy.end), afterLone.end.Sub(afterBusy.end)
	t.Logf("round after a busy one came %v later; after a lone one, %v", waited, short)
	if waited < busyGather {
		t.Fatalf("the round after 10 events came %v after it; want BusyGather (%v) at least", waited, busyGather)
	}
	if short >= busyGather/2 {
		t.Fatalf("the round after a lone event came %v after it; want about Gather plus NotifyGap", short)
	}
}
