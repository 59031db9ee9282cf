package notify_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// Dead letters are not kept for ever: the retention passes delete those that failed longer than
// DeadRetention ago (default 30 days), and keep the younger ones for an operator to replay; a
// negative DeadRetention keeps them all.
func TestDeadLettersAreDeletedAfterDeadRetention(t *testing.T) {
	for _, tc := range []struct {
		name          string
		deadRetention time.Duration
		oldKept       bool
	}{
		{"default", 0, false},
		{"kept forever", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := newPool(t)
			for _, id := range []string{"ord-dead-old", "ord-dead-young", "ord-sent-old"} {
				enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder(id)})
			}
			if _, err := pool.Exec(t.Context(), `
				UPDATE notifications SET state = 'dead', attempts = 10, last_error = 'refused',
					fail_time = now() - CASE order_id WHEN 'ord-dead-old' THEN interval '31 days' ELSE interval '29 days' END
				WHERE order_id IN ('ord-dead-old', 'ord-dead-young');
				UPDATE notifications SET state = 'sent', sent_time = now() - interval '8 days' WHERE order_id = 'ord-sent-old'`); err != nil {
				t.Fatal(err)
			}
			cfg := fastConfig(&recordingSender{channel: notify.ChannelWebhook})
			cfg.DeadRetention = tc.deadRetention
			startDispatcher(t, pool, cfg) // a retention pass at start

			// The delivered row, past Retention, is gone once the pass has run.
			testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if n := len(notificationIDs(t, pool, "ord-sent-old", notify.ChannelWebhook)); n != 0 {
					return fmt.Errorf("old delivered row not deleted yet")
				}
				return nil
			})
			testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if old := len(notificationIDs(t, pool, "ord-dead-old", notify.ChannelWebhook)) == 1; old != tc.oldKept {
					return fmt.Errorf("dead letter failed 31 days ago kept: %v; want %v", old, tc.oldKept)
				}
				return nil
			})
			if n := len(notificationIDs(t, pool, "ord-dead-young", notify.ChannelWebhook)); n != 1 {
				t.Fatalf("dead letter failed 29 days ago deleted; want it kept for an operator")
			}
		})
	}
}
