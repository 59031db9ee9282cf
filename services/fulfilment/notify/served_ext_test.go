package notify_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

// A copy with no sender at all writes the row of a channel another copy serves from the moment
// that copy's heartbeat is recorded, however lately this copy's own dispatcher looked: the
// decision is the table's, in the enqueueing statement. Before, such a copy wrote nothing until
// its own dispatcher's next heartbeat (up to 10s later, or never while its dispatcher had not
// started) saw the other copy, and the notifications of the orders it changed meanwhile were
// lost, not delayed. The other copy runs in another process: its heartbeat is stamped by hand.
func TestACopyWithoutSendersWritesRowsForACopyThatStartedJustNow(t *testing.T) {
	pool := newPool(t)
	startDispatcher(t, pool, notify.DispatcherConfig{}) // this copy: no senders, production intervals
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var n int
		_ = pool.QueryRow(t.Context(), `SELECT count(*) FROM notification_channels`).Scan(&n)
		if n > 0 {
			return fmt.Errorf("%d channels served before any copy with a sender started", n)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // its first heartbeat has found nothing served

	stampServed(t, pool, notify.ChannelWebhook, 0) // the copy with the webhook sender starts
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-just-served"), Email: "ada@example.com", Channels: notify.Channels{}})
	ids := notificationIDs(t, pool, "ord-just-served", notify.ChannelWebhook)
	if len(ids) != 1 {
		t.Fatalf("a copy without senders wrote %d webhook rows for an order changed just after a copy with the webhook "+
			"sender started; want 1, for that copy to send", len(ids))
	}
	if got := notificationIDs(t, pool, "ord-just-served", notify.ChannelEmail); len(got) != 0 {
		t.Fatalf("wrote %d email rows though no copy serves email; want none", len(got))
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
	write := func(w *notify.Writer, pool *pgxpool.Pool, orderID string) {
		t.Helper()
		if err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			return w.Enqueue(t.Context(), tx, notify.Message{Kind: notify.KindReady, Order: readyOrder(orderID)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	write(&wx, x, "ord-x")
	write(&wy, y, "ord-y") // well within notifyGap of the first
	if time.Since(start) >= notify.NotifyGap {
		t.Skip("the two writes were further apart than the gap; nothing to compare")
	}
	id := notificationIDs(t, y, "ord-y", notify.ChannelWebhook)[0]
	testenv.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if s, _ := stateOf(t, y, id); s != "sent" {
			return fmt.Errorf("the second schema's notification is %s %v after it was written; want it sent at once", s, time.Since(start))
		}
		return nil
	})
}
