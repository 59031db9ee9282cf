package notify_test

import (
	"fmt"
	"strings"
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
