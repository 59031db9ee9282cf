package notify_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// stampServed records, as a copy's heartbeat does, that some copy served channel ago.
func stampServed(t *testing.T, pool *pgxpool.Pool, channel string, ago time.Duration) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `INSERT INTO notification_channels (channel, served_time)
		VALUES ($1, now() - $2::bigint * interval '1 microsecond')
		ON CONFLICT (channel) DO UPDATE SET served_time = excluded.served_time`, channel, ago.Microseconds()); err != nil {
		t.Fatal(err)
	}
}

// A copy without a sender does not skip a notification written just before the copy that has
// the sender recorded its first heartbeat (a new deployment, its copies starting in any order):
// it waits UnservedWait. Before, the copy without the sender skipped it at once.
func TestANotificationWrittenBeforeItsSendersCopyStartedIsLeftForIt(t *testing.T) {
	pool := newPool(t)
	startDispatcher(t, pool, notify.DispatcherConfig{PollInterval: 50 * time.Millisecond}) // no senders, the default wait
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-early")})
	id := notificationIDs(t, pool, "ord-early", notify.ChannelWebhook)[0]
	time.Sleep(500 * time.Millisecond) // ten of its rounds
	if s, _ := stateOf(t, pool, id); s != "pending" {
		t.Fatalf("the webhook written before its sender's copy started is %s; want it left pending for that copy", s)
	}
	sender := &recordingSender{channel: notify.ChannelWebhook}
	startDispatcher(t, pool, fastConfig(sender))
	waitForState(t, pool, id, "sent")
}

// Two copies whose sender configuration differs for a moment (a rolling deploy that adds a
// channel, a pod whose SMTP/webhook secret failed to mount) must not drop notifications: the
// copy without a sender must not mark "skipped" the due rows the copy that has one is merely
// busy sending. Here the receiver is slow (300ms per request) and the sending copy has 1 slot;
// the copy without senders runs with the production defaults.
func TestACopyWithoutASenderLeavesRowsToABusyCopyThatHasOne(t *testing.T) {
	pool := newPool(t)
	url := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	}))
	withSender := fastConfig(webhookSender(t, url))
	withSender.Concurrency = 1
	startDispatcher(t, pool, withSender)
	startDispatcher(t, pool, notify.DispatcherConfig{}) // no senders, default intervals

	const n = 10
	for i := range n {
		enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder(fmt.Sprintf("ord-mix-%d", i))})
	}
	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		var pending int
		_ = pool.QueryRow(t.Context(), `SELECT count(*) FROM notifications WHERE state = 'pending'`).Scan(&pending)
		if pending > 0 {
			return fmt.Errorf("%d pending", pending)
		}
		return nil
	})
	var skipped int
	_ = pool.QueryRow(t.Context(), `SELECT count(*) FROM notifications WHERE state = 'skipped'`).Scan(&skipped)
	if skipped > 0 {
		t.Fatalf("%d of %d webhook notifications were marked skipped (never to be sent) by the copy without a sender "+
			"while the copy with one was busy; want them left for the copy that can send them", skipped, n)
	}
}

// A copy leaves the rows of a channel another copy served lately to that copy, without
// polling for them (they are not its work), and marks them skipped once no copy has served the
// channel for the grace.
func TestACopySkipsAChannelsRowsOnlyOnceNoCopyHasServedItForTheGrace(t *testing.T) {
	base := newPool(t)
	pool, statements := countedPool(t, base)
	stampServed(t, base, notify.ChannelEmail, time.Minute) // another copy sends email
	sender := &recordingSender{channel: notify.ChannelWebhook}
	cfg := fastConfig(sender) // PollInterval 50ms
	startDispatcher(t, pool, cfg)

	enqueue(t, base, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-served"), Email: "ada@example.com"})
	waitForState(t, base, notificationIDs(t, base, "ord-served", notify.ChannelWebhook)[0], "sent")
	email := notificationIDs(t, base, "ord-served", notify.ChannelEmail)[0]
	waitQuiet(t, statements)
	time.Sleep(time.Second) // 20 poll intervals
	if s, _ := stateOf(t, base, email); s != "pending" {
		t.Fatalf("the email another copy serves is %s; want it left pending for that copy", s)
	}
	// The heartbeat (every 10s) may fall in the second; a poll for the other copy's row would
	// be 20 statements.
	if n := statements.n.Load(); n > 2 {
		t.Fatalf("the copy without an email sender sent %d statements in a second while the email waited for "+
			"the copy that has one; want it to leave that row alone", n)
	}

	stampServed(t, base, notify.ChannelEmail, time.Hour) // that copy has been gone for long
	time.Sleep(notify.NotifyGap)
	enqueue(t, base, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-wake")}) // wakes the copy
	waitForState(t, base, email, "skipped")
	var lastError string
	if err := base.QueryRow(t.Context(), `SELECT last_error FROM notifications WHERE id = $1`, email).Scan(&lastError); err != nil ||
		lastError != "no email sender configured" {
		t.Fatalf("last_error of the skipped email = %q, %v", lastError, err)
	}
}

// Enqueue in a copy without a sender for a channel writes the channel's row while another copy
// serves it, so that copy sends it; not once no copy has for the grace. A copy with no sender
// at all does the same.
func TestEnqueueWritesTheRowsOfChannelsAnotherCopyServes(t *testing.T) {
	pool := newPool(t)
	webhookOnly := notify.Channels{notify.ChannelWebhook: true}
	rows := func(orderID string) string {
		t.Helper()
		r, _ := pool.Query(t.Context(), `SELECT channel FROM notifications WHERE order_id = $1 ORDER BY 1`, orderID)
		got, err := pgx.CollectRows(r, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, ",")
	}

	stampServed(t, pool, notify.ChannelEmail, time.Minute)
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-live"), Email: "ada@example.com", Channels: webhookOnly})
	if got := rows("ord-live"); got != "email,webhook" {
		t.Fatalf("rows written by a copy without email while another serves it: %q; want email,webhook", got)
	}

	stampServed(t, pool, notify.ChannelEmail, time.Hour)
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-gone"), Email: "ada@example.com", Channels: webhookOnly})
	if got := rows("ord-gone"); got != "webhook" {
		t.Fatalf("rows written by a copy without email when no copy has served it for long: %q; want webhook", got)
	}

	// A copy with no sender while another serves the webhook.
	stampServed(t, pool, notify.ChannelWebhook, time.Minute)
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-none-here"), Email: "ada@example.com", Channels: notify.Channels{}})
	if got := rows("ord-none-here"); got != "webhook" {
		t.Fatalf("rows written by a copy without senders while another serves the webhook: %q; want webhook", got)
	}
}

// execCounter is a transaction that counts the statements Enqueue sends and runs them on tx.
type execCounter struct {
	pgx.Tx
	n int
}

func (c *execCounter) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.n++
	return c.Tx.Exec(ctx, sql, args...)
}

// A writer without senders writes the rows of a channel another copy serves, and nothing,
// not even a statement, once it has seen that no copy serves any (a deployment without
// notifications pays nothing for them). Until it has looked it writes as though one did, so
// a copy starting beside one that serves a channel all along loses none of its rows; a
// channel first served elsewhere is written from its next look on.
func TestAWriterWithoutSendersWritesWhileAChannelIsServedAndNothingOnceNoneIs(t *testing.T) {
	notify.SetServedLookEvery(t, 50*time.Millisecond)
	pool := newPool(t)
	var w notify.Writer
	statements := func(orderID string) int {
		t.Helper()
		var c execCounter
		if err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			c.Tx = tx
			return w.Enqueue(t.Context(), &c, notify.Message{Kind: notify.KindReady, Order: readyOrder(orderID), Email: "ada@example.com", Channels: notify.Channels{}})
		}); err != nil {
			t.Fatal(err)
		}
		return c.n
	}
	if n := statements("ord-before-looking"); n != 1 {
		t.Fatalf("a writer that has not looked yet sent %d statements; want 1, the checked insert", n)
	}

	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.WatchServed(ctx, pool) }()
	t.Cleanup(func() { stop(); <-done })
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := statements("ord-none-served"); n != 0 {
			return fmt.Errorf("%d statements with no channel served anywhere; want none", n)
		}
		return nil
	})

	stampServed(t, pool, notify.ChannelWebhook, 0) // a copy with the webhook sender starts
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		enqueue := func() error {
			return pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
				return w.Enqueue(t.Context(), tx, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-served"), Email: "ada@example.com", Channels: notify.Channels{}})
			})
		}
		if err := enqueue(); err != nil {
			t.Fatal(err)
		}
		if ids := notificationIDs(t, pool, "ord-served", notify.ChannelWebhook); len(ids) != 1 {
			return fmt.Errorf("%d webhook rows written while a copy serves the webhook; want 1", len(ids))
		}
		return nil
	})
	if got := notificationIDs(t, pool, "ord-served", notify.ChannelEmail); len(got) != 0 {
		t.Fatalf("wrote %d email rows though no copy serves email; want none", len(got))
	}
}

// An Enqueue that writes no row (a channel served nowhere: an email-only deployment's
// preparing, or an order without an email) does not take the writer's NOTIFY slot: the next
// one, which writes a row within the gap, NOTIFYs, and its email goes out at once, not at the
// dispatchers' idle poll.
func TestAnEnqueueThatWritesNothingDoesNotSilenceTheNext(t *testing.T) {
	pool := newPool(t)
	sender := &recordingSender{channel: notify.ChannelEmail}
	cfg := fastConfig(sender)
	cfg.IdlePollInterval = 10 * time.Second // the default
	startDispatcher(t, pool, cfg)
	time.Sleep(time.Second) // past the start-up rounds; the heartbeat stamped email

	var w notify.Writer
	emailOnly := notify.Channels{notify.ChannelEmail: true}
	// Both in open transactions, written well within the gap of each other, then committed.
	var txs []pgx.Tx
	for _, m := range []notify.Message{
		{Kind: notify.KindPreparing, Order: readyOrder("ord-prep"), Email: "bob@example.com", Channels: emailOnly},
		{Kind: notify.KindReady, Order: readyOrder("ord-ready"), Email: "ada@example.com", Channels: emailOnly},
	} {
		tx, err := pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		txs = append(txs, tx)
		if err := w.Enqueue(t.Context(), tx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, tx := range txs {
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if len(notificationIDs(t, pool, "ord-ready", notify.ChannelEmail)) != 1 {
		t.Fatal("the email was not written")
	}
	testenv.CheckFor(t, 12*time.Second, 10*time.Millisecond, func() error {
		if _, ok := sender.sentAt("ord-ready"); !ok {
			return fmt.Errorf("not sent")
		}
		return nil
	})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the email went out %v after it was written (idle poll %v); want the NOTIFY's promptness", d.Round(time.Millisecond), cfg.IdlePollInterval)
	}
}

// Two schemas written by one process (two fulfilment instances), each with its own Writer: a
// NOTIFY sent for one schema does not make the other's writer leave its own out. Before, the
// gap between NOTIFYs was one for the whole process, and the second schema's notification
// waited for its dispatchers' idle poll (10s) although nothing woke them.
func TestAWritersNotifyGapIsItsOwn(t *testing.T) {
	x, y := newPool(t), newPool(t)
	for _, pool := range []*pgxpool.Pool{x, y} {
		cfg := fastConfig(&recordingSender{channel: notify.ChannelWebhook})
		cfg.IdlePollInterval = 10 * time.Second
		startDispatcher(t, pool, cfg)
	}
	time.Sleep(time.Second) // both dispatchers idle, listening
	var wx, wy notify.Writer
	// Both written in open transactions, well within notifyGap of each other, then committed.
	tx, err := x.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ty, err := y.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := wx.Enqueue(t.Context(), tx, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-x")}); err != nil {
		t.Fatal(err)
	}
	if err := wy.Enqueue(t.Context(), ty, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-y")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []pgx.Tx{tx, ty} {
		if err := c.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	id := notificationIDs(t, y, "ord-y", notify.ChannelWebhook)[0]
	testenv.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if s, _ := stateOf(t, y, id); s != "sent" {
			return fmt.Errorf("the second schema's notification is %s %v after it was written; want it sent at once", s, time.Since(start))
		}
		return nil
	})
}

// A writer spaces its NOTIFYs (one per notifyGap) whether or not a sender is here: without one,
// while another copy serves the webhook (a rolling deploy, a sender's secret that failed to
// mount), every transition's statement writes a row and would NOTIFY, each holding a lock
// global to the server through its commit.
func TestAWriterSpacesItsNotifiesWithOrWithoutASenderHere(t *testing.T) {
	notify.SetServedLookEvery(t, 20*time.Millisecond)
	for _, tc := range []struct {
		name     string
		channels notify.Channels
	}{
		{"webhook sender here", notify.Channels{notify.ChannelWebhook: true}},
		{"no sender here, webhook served elsewhere", notify.Channels{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := newPool(t)
			stampServed(t, pool, notify.ChannelWebhook, 0)
			var w notify.Writer
			ctx, stop := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { defer close(done); w.WatchServed(ctx, pool) }()
			t.Cleanup(func() { stop(); <-done })
			testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
				if !notify.Looked(&w) {
					return fmt.Errorf("the writer has not looked at the channels served")
				}
				return nil
			})

			conn, err := pool.Acquire(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Release()
			var channel string
			if err := conn.QueryRow(t.Context(), `SELECT 'handoff_notify_' || current_schema()`).Scan(&channel); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(t.Context(), "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
				t.Fatal(err)
			}
			// Three transitions in open transactions, written well within one gap, then committed.
			const n = 3 // the pool has 4 connections, one listening
			var txs []pgx.Tx
			for range n {
				tx, err := pool.Begin(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
				txs = append(txs, tx)
			}
			start := time.Now()
			for i, tx := range txs {
				o := readyOrder(fmt.Sprintf("ord-gap-%d", i))
				if err := w.Enqueue(t.Context(), tx, notify.Message{Kind: notify.KindReady, Order: o, Channels: tc.channels}); err != nil {
					t.Fatal(err)
				}
			}
			// One per gap begun: one when written within a gap (a few ms here), more on a
			// machine slow enough to take longer.
			allowed := 1 + int(time.Since(start)/notify.NotifyGap)
			for _, tx := range txs {
				if err := tx.Commit(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			got := 0
			for {
				wctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				_, err := conn.Conn().WaitForNotification(wctx)
				cancel()
				if err != nil {
					break
				}
				got++
			}
			if got < 1 || got > allowed {
				t.Errorf("%d NOTIFYs for %d Enqueues written by one writer within %d gaps; want 1 to %d", got, n, allowed, allowed)
			}
		})
	}
}
