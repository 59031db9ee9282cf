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

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// The "collect it soon" email (with the pickup code) is refused once (451); meanwhile the order
// expires and the shopper is emailed that it was released. The reminder's retry is not sent:
// it would send the shopper, code in hand, to collect an order that is gone.
func TestAReminderRetriedAfterTheOrderEndedIsNotSent(t *testing.T) {
	pool := newPool(t)
	mta := newSMTPServer(t)
	mta.rcptReply = func(_ string, attempt int) string {
		if attempt == 1 {
			return "451 4.3.0 try again later"
		}
		return ""
	}
	cfg := fastConfig(smtpSender(t, mta.addr()))
	cfg.InitialBackoff = time.Second
	cfg.MaxBackoff = 2 * time.Second
	cfg.PickupCode = func(string) string { return "4821" }
	startDispatcher(t, pool, cfg)

	soon := readyOrder("ord-stale")
	soon.Version = 5
	enqueue(t, pool, notify.Message{Kind: notify.KindExpiringSoon, Order: soon, Email: "ada@example.com"})
	soonID := notificationIDs(t, pool, "ord-stale", notify.ChannelEmail)[0]
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, attempts := stateOf(t, pool, soonID); attempts < 1 || len(mta.received()) > 0 {
			return fmt.Errorf("reminder not tried yet")
		}
		return nil
	})

	expired := readyOrder("ord-stale")
	expired.Version = 6
	expired.State = fulfilmentv1.OrderState_ORDER_STATE_EXPIRED
	expired.Reason = "not collected within the pickup window"
	enqueue(t, pool, notify.Message{Kind: notify.KindExpired, Order: expired, Email: "ada@example.com"})

	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s, _ := stateOf(t, pool, soonID); s == "pending" {
			return fmt.Errorf("reminder still pending")
		}
		return nil
	})
	if s, _ := stateOf(t, pool, soonID); s != "skipped" {
		t.Errorf("the reminder retried after the order expired is %s; want skipped", s)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(mta.received()); n != 1 {
			return fmt.Errorf("%d emails received, want the expiry's", n)
		}
		return nil
	})
	var subjects []string
	for _, m := range mta.received() {
		subjects = append(subjects, parseMail(t, m.Data).Subject)
	}
	if len(subjects) != 1 || !strings.Contains(subjects[0], "was not collected") {
		t.Fatalf("the shopper got %q; want only the expiry's email", subjects)
	}
}

// A dead "ready" email (with the pickup code) replayed after the order's "collected" email has
// aged out under Retention is not sent: the shopper would be told, pickup code in hand, that an
// order collected days ago is ready for pickup. (Without fulfilment's orders table, as here,
// the end notification is what tells the order has ended: retention keeps it while such an
// email may still be replayed.)
func TestAReadyEmailReplayedAfterRetentionIsNotSentForACollectedOrder(t *testing.T) {
	pool := newPool(t)
	mta := newSMTPServer(t)

	ready := readyOrder("ord-old")
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: ready, Email: "ada@example.com"})
	readyID := notificationIDs(t, pool, "ord-old", notify.ChannelEmail)[0]
	collected := readyOrder("ord-old")
	collected.Version = 5
	collected.State = fulfilmentv1.OrderState_ORDER_STATE_COLLECTED
	enqueue(t, pool, notify.Message{Kind: notify.KindCollected, Order: collected, Email: "ada@example.com"})
	// Eight days ago: the ready email was dead-lettered (mail outage), the collected one sent.
	if _, err := pool.Exec(t.Context(), `UPDATE notifications SET state = 'dead', attempts = 10, last_error = 'SMTP down',
		fail_time = now() - interval '8 days' WHERE id = $1`, readyID); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `UPDATE notifications SET state = 'sent', sent_time = now() - interval '8 days'
		WHERE order_id = 'ord-old' AND kind = 'order.collected'`); err != nil {
		t.Fatal(err)
	}

	cfg := fastConfig(smtpSender(t, mta.addr()))
	cfg.PickupCode = func(string) string { return "4821" }
	startDispatcher(t, pool, cfg) // default Retention (7 days): its first pass runs at start
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		var n int
		_ = pool.QueryRow(t.Context(), `SELECT count(*) FROM notifications WHERE kind = 'order.collected' AND channel = 'webhook'`).Scan(&n)
		if n != 0 {
			return fmt.Errorf("collected webhook row not yet deleted by retention")
		}
		return nil
	})

	// The operator replays the dead letters after fixing mail.
	if _, err := adminClient(t, pool).ReplayNotification(t.Context(), &fulfilmentv1.ReplayNotificationRequest{NotificationId: readyID}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if s, _ := stateOf(t, pool, readyID); s == "pending" {
			return fmt.Errorf("replayed ready still pending")
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	for _, m := range mta.received() {
		p := parseMail(t, m.Data)
		if strings.Contains(p.Body, "4821") {
			t.Fatalf("a collected order's shopper was emailed %q with the pickup code:\n%s", p.Subject, p.Body)
		}
	}
	if s, _ := stateOf(t, pool, readyID); s != "skipped" {
		t.Fatalf("the replayed ready email of a collected order is %s; want skipped", s)
	}
}

// An order's end is read from the order itself, as fulfilment has it (OrderEnded): a replayed "ready" email of an order that has been collected is
// not sent, though no notification of its end exists (it was never written for this channel, or
// has been deleted).
func TestAReadyEmailOfAnOrderTheOrdersTableShowsEndedIsNotSent(t *testing.T) {
	pool := newPool(t)
	mta := newSMTPServer(t)
	cfg := fastConfig(smtpSender(t, mta.addr()))
	cfg.PickupCode = func(string) string { return "4821" }
	// As fulfilment's orders have them: ord-gone collected, ord-open ready.
	cfg.OrderEnded = func(_ context.Context, id string) (string, error) {
		if id == "ord-gone" {
			return "collected", nil
		}
		return "", nil
	}
	startDispatcher(t, pool, cfg)

	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-gone"), Email: "ada@example.com"})
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-open"), Email: "bob@example.com"})
	gone := notificationIDs(t, pool, "ord-gone", notify.ChannelEmail)[0]
	waitForState(t, pool, gone, "skipped")
	waitForState(t, pool, notificationIDs(t, pool, "ord-open", notify.ChannelEmail)[0], "sent")
	for _, m := range mta.received() {
		if m.To[0] == "ada@example.com" {
			t.Fatalf("the shopper of a collected order was emailed its pickup code:\n%s", m.Data)
		}
	}
	var lastError string
	if err := pool.QueryRow(t.Context(), `SELECT last_error FROM notifications WHERE id = $1`, gone).Scan(&lastError); err != nil ||
		!strings.Contains(lastError, "ended since (collected)") {
		t.Fatalf("last_error = %q, %v; want it to say the order was collected", lastError, err)
	}
}

// Ordering: the "confirmed" email, refused once (451), comes due again after the "ready"
// email went out; it is not sent, or the shopper would read "ready for pickup" and then
// "confirmed ... we will tell you when it is ready". The later email told them already.
func TestAConfirmedEmailRetriedAfterReadyWasSentIsNotSent(t *testing.T) {
	pool := newPool(t)
	mta := newSMTPServer(t)
	var rcpts atomic.Int64
	mta.rcptReply = func(string, int) string {
		if rcpts.Add(1) == 1 {
			return "451 4.3.0 try again later"
		}
		return ""
	}
	cfg := fastConfig(smtpSender(t, mta.addr()))
	cfg.InitialBackoff = 800 * time.Millisecond
	cfg.MaxBackoff = 800 * time.Millisecond
	startDispatcher(t, pool, cfg)

	conf := readyOrder("ord-order")
	conf.Version, conf.State = 2, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED
	enqueue(t, pool, notify.Message{Kind: notify.KindConfirmed, Order: conf, Email: "ada@example.com"})
	confID := notificationIDs(t, pool, "ord-order", notify.ChannelEmail)[0]
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if rcpts.Load() < 1 {
			return fmt.Errorf("confirmed not tried yet")
		}
		return nil
	})
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-order"), Email: "ada@example.com"})
	testenv.CheckFor(t, 8*time.Second, 20*time.Millisecond, func() error {
		if s, _ := stateOf(t, pool, confID); s == "pending" || len(mta.received()) < 1 {
			return fmt.Errorf("confirmed is %s, %d emails", s, len(mta.received()))
		}
		return nil
	})
	var subjects []string
	for _, m := range mta.received() {
		subjects = append(subjects, parseMail(t, m.Data).Subject)
	}
	if strings.Contains(subjects[len(subjects)-1], "is confirmed") {
		t.Fatalf("the shopper's emails arrived as %q: \"confirmed, we will tell you when it is ready\" after \"ready\"", subjects)
	}
	if s, _ := stateOf(t, pool, confID); s != "skipped" {
		t.Fatalf("the confirmed email retried after ready was sent is %s (emails %q); want skipped", s, subjects)
	}
}

// gatedEmail sends a "ready" and a "confirmed" email in parallel, the confirmed one finishing
// last, as two SMTP sessions may.
type gatedEmail struct {
	mu             sync.Mutex
	done           []string
	confirmedStart chan struct{}
	readyDone      chan struct{}
}

func (g *gatedEmail) Channel() string { return notify.ChannelEmail }

func (g *gatedEmail) Send(ctx context.Context, n notify.Notification) error {
	switch n.Kind {
	case notify.KindReady:
		select {
		case <-g.confirmedStart:
		case <-time.After(2 * time.Second):
		}
		g.mu.Lock()
		g.done = append(g.done, n.Kind)
		g.mu.Unlock()
		close(g.readyDone)
	case notify.KindConfirmed:
		close(g.confirmedStart)
		select {
		case <-g.readyDone:
		case <-time.After(5 * time.Second):
		}
		g.mu.Lock()
		g.done = append(g.done, n.Kind)
		g.mu.Unlock()
	}
	return nil
}

// Two emails of one order due together (after a mail outage) are claimed in one round and would
// be sent in parallel, in no set order: the earlier gives way to the later, still pending, so the
// shopper never reads "confirmed" after "ready". Before, only a later email already sent
// counted.
func TestTwoDueEmailsOfOneOrderAreNotSentOutOfOrder(t *testing.T) {
	pool := newPool(t)
	confirmed := readyOrder("ord-ooo")
	confirmed.Version = 2
	confirmed.State = fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED
	enqueue(t, pool, notify.Message{Kind: notify.KindConfirmed, Order: confirmed, Email: "ada@example.com"})
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-ooo"), Email: "ada@example.com"})
	if _, err := pool.Exec(t.Context(), `UPDATE notifications SET attempts = 2, next_attempt_at = now() WHERE order_id = 'ord-ooo'`); err != nil {
		t.Fatal(err)
	}
	g := &gatedEmail{confirmedStart: make(chan struct{}), readyDone: make(chan struct{})}
	startDispatcher(t, pool, fastConfig(g))
	for _, id := range notificationIDs(t, pool, "ord-ooo", notify.ChannelEmail) {
		testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if s, _ := stateOf(t, pool, id); s == "pending" {
				return fmt.Errorf("notification %s still pending", id)
			}
			return nil
		})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if i := slices.Index(g.done, notify.KindConfirmed); i >= 0 && slices.Contains(g.done[:i], notify.KindReady) {
		t.Fatalf("emails delivered in the order %v: the shopper was told 'confirmed' after 'ready'", g.done)
	}
	if !slices.Contains(g.done, notify.KindReady) {
		t.Fatalf("emails delivered: %v; want the ready one", g.done)
	}
}
