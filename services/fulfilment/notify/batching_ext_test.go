package notify_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// statementCounter counts the statements a pool sends that touch the notifications table.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.Contains(data.SQL, "notifications") {
		c.n.Add(1)
	}
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countedPool is a pool on base's schema whose statements on notifications are counted.
func countedPool(t *testing.T, base *pgxpool.Pool) (*pgxpool.Pool, *statementCounter) {
	t.Helper()
	c := &statementCounter{}
	cfg := base.Config()
	cfg.ConnConfig.Tracer = c
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, c
}

// recordingSender takes every notification at once and remembers when it came.
type recordingSender struct {
	channel string
	mu      sync.Mutex
	at      map[string]time.Time // by order id
}

func (s *recordingSender) Channel() string { return s.channel }

func (s *recordingSender) Send(_ context.Context, n notify.Notification) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string]time.Time{}
	}
	s.at[n.Order.GetId()] = time.Now()
	return nil
}

func (s *recordingSender) sentAt(orderID string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.at[orderID]
	return at, ok
}

func (s *recordingSender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

// A stream of order transitions from several writers, each in its own transaction as
// checkouts are, is claimed in a few rounds, not one (or two) per notification, and every
// notification still goes out within a few tens of milliseconds.
func TestStreamOfNotificationsIsClaimedInBatchesAndSentPromptly(t *testing.T) {
	base := newPool(t)
	pool, statements := countedPool(t, base)
	sender := &recordingSender{channel: notify.ChannelWebhook}
	cfg := fastConfig(sender)
	cfg.Concurrency = 64
	startDispatcher(t, pool, cfg)
	waitQuiet(t, statements)

	const writers, each = 4, 50
	committed := make([]time.Time, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				k := w*each + i
				enqueue(t, base, notify.Message{Kind: notify.KindConfirmed, Order: readyOrder(fmt.Sprintf("ord-%03d", k))})
				committed[k] = time.Now()
				time.Sleep(time.Millisecond) // about 1000 transitions a second
			}
		})
	}
	wg.Wait()
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := sender.count(); n != writers*each {
			return fmt.Errorf("%d of %d notifications sent", n, writers*each)
		}
		return nil
	})
	n := waitQuiet(t, statements)
	var waits []time.Duration
	for k, c := range committed {
		at, _ := sender.sentAt(fmt.Sprintf("ord-%03d", k))
		waits = append(waits, max(at.Sub(c), 0))
	}
	slices.Sort(waits)
	p50, p99 := waits[len(waits)/2], waits[len(waits)*99/100]
	t.Logf("%d notifications: %d statements on notifications (rounds and records), wait from commit to send p50 %v p99 %v max %v",
		len(waits), n, p50, p99, waits[len(waits)-1])
	// Before batching: a claim and a next-due query per NOTIFY and per finished send, and a
	// record per send: about five statements a notification.
	if n > len(waits)/2 {
		t.Fatalf("%d statements for %d notifications; want rounds and records in batches (at most one per two)", n, len(waits))
	}
	if p50 > 100*time.Millisecond || p99 > time.Second {
		t.Fatalf("wait from commit to send p50 %v p99 %v; want well under 100ms typically", p50, p99)
	}
}

// waitQuiet waits until the counted pool has sent nothing for a while (start-up, follow-up
// rounds after the last NOTIFY), then returns the count and resets it.
func waitQuiet(t *testing.T, c *statementCounter) int {
	t.Helper()
	last, quietSince := c.n.Load(), time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for time.Since(quietSince) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("the dispatcher never went quiet (%d statements)", c.n.Load())
		}
		time.Sleep(20 * time.Millisecond)
		if n := c.n.Load(); n != last {
			last, quietSince = n, time.Now()
		}
	}
	return int(c.n.Swap(0))
}

// With nothing pending a dispatcher sends no statement at all, whatever its PollInterval, with
// or without senders; and it still notices new work at once.
func TestIdleDispatcherSendsNoStatements(t *testing.T) {
	for _, tc := range []struct {
		name    string
		senders []notify.Sender
	}{
		{"webhook sender", []notify.Sender{&recordingSender{channel: notify.ChannelWebhook}}},
		{"no sender", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newPool(t)
			pool, statements := countedPool(t, base)
			cfg := fastConfig(tc.senders...) // PollInterval 50ms
			startDispatcher(t, pool, cfg)
			enqueue(t, base, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-idle")})
			want := "sent"
			if tc.senders == nil {
				want = "skipped"
			}
			waitForState(t, base, notificationIDs(t, base, "ord-idle", notify.ChannelWebhook)[0], want)
			waitQuiet(t, statements)

			time.Sleep(time.Second) // 20 poll intervals
			if n := statements.n.Load(); n != 0 {
				t.Fatalf("an idle dispatcher sent %d statements in a second; want none", n)
			}

			time.Sleep(notify.NotifyGap) // this Enqueue NOTIFYs
			start := time.Now()
			enqueue(t, base, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-woken")})
			waitForState(t, base, notificationIDs(t, base, "ord-woken", notify.ChannelWebhook)[0], want)
			t.Logf("%s after its commit", time.Since(start))
		})
	}
}

// Without a sender, notifications are marked skipped (not lost, not dead-lettered) in rounds of
// PollInterval, not one round per notification.
func TestDispatcherWithoutSendersSkipsInFewRounds(t *testing.T) {
	base := newPool(t)
	pool, statements := countedPool(t, base)
	cfg := fastConfig()
	cfg.PollInterval = 200 * time.Millisecond
	startDispatcher(t, pool, cfg)
	waitQuiet(t, statements)

	const orders = 100
	for i := range orders {
		enqueue(t, base, notify.Message{Kind: notify.KindReady, Order: readyOrder(fmt.Sprintf("ord-%03d", i)), Email: "ada@example.com"})
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var skipped, other int
		err := base.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE state = 'skipped'), count(*) FILTER (WHERE state <> 'skipped') FROM notifications`).Scan(&skipped, &other)
		if err != nil {
			return err
		}
		if skipped != 2*orders || other != 0 {
			return fmt.Errorf("%d skipped and %d other notifications, want %d skipped", skipped, other, 2*orders)
		}
		return nil
	})
	n := waitQuiet(t, statements)
	t.Logf("%d notifications skipped with %d statements", 2*orders, n)
	// Before: a claim and a next-due query per NOTIFY, i.e. per transition.
	if n > 10 {
		t.Fatalf("%d statements to skip %d notifications; want a round per PollInterval", n, 2*orders)
	}
	var lastError string
	if err := base.QueryRow(t.Context(), `SELECT last_error FROM notifications WHERE channel = 'email' LIMIT 1`).Scan(&lastError); err != nil || lastError != "no email sender configured" {
		t.Fatalf("last_error of a skipped email = %q, %v", lastError, err)
	}
}

// A writer that finds a NOTIFY younger than the gap leaves its own out: its notification goes
// out with the dispatcher's follow-up round, long before IdlePollInterval; and one whose
// NOTIFYing neighbour rolled back goes out with the idle poll, the safety net.
func TestNotificationsWrittenWithoutNotifyGoOutPromptly(t *testing.T) {
	pool := newPool(t)
	sender := &recordingSender{channel: notify.ChannelWebhook}
	cfg := fastConfig(sender)
	cfg.IdlePollInterval = 700 * time.Millisecond
	startDispatcher(t, pool, cfg)
	time.Sleep(300 * time.Millisecond) // past the start-up rounds

	time.Sleep(notify.NotifyGap)
	start := time.Now()
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-notifies")})
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-silent")})
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, ok := sender.sentAt("ord-silent"); !ok {
			return fmt.Errorf("ord-silent not sent")
		}
		return nil
	})
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Fatalf("a notification written without NOTIFY went out after %v; want the follow-up round", d)
	}

	time.Sleep(time.Second) // past the follow-up rounds
	time.Sleep(notify.NotifyGap)
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		if err := writer.Enqueue(t.Context(), tx, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-rolled-back")}); err != nil {
			return err
		}
		return fmt.Errorf("roll back")
	})
	if err == nil {
		t.Fatal("transaction committed")
	}
	start = time.Now()
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-orphan")})
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := sender.sentAt("ord-orphan"); !ok {
			return fmt.Errorf("ord-orphan not sent")
		}
		return nil
	})
	t.Logf("a notification whose NOTIFY rolled back went out after %v (IdlePollInterval %v)", time.Since(start), cfg.IdlePollInterval)
}
