package notify_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// A channel whose receiver hangs keeps its lane full, so its due rows pile up: 150,000 emails
// behind a mail server that takes connections and never answers made a round claiming one
// webhook row read all of them (390 ms). A round reads no other channel's rows, however many
// are due: not to claim (email served here, its lane full), not to find rows to skip (email
// served by another copy only, or by nobody and the rows too young to skip).
func TestARoundReadsNoOtherChannelsBacklog(t *testing.T) {
	pool := newPool(t)
	snap, err := proto.Marshal(readyOrder("ord-mail"))
	if err != nil {
		t.Fatal(err)
	}
	const backlog = 20000
	if _, err := pool.Exec(t.Context(), `
		INSERT INTO notifications (id, order_id, kind, channel, recipient, order_snapshot, next_attempt_at, create_time, order_version)
		SELECT gen_random_uuid(), 'ord-mail-' || g, 'order.ready', 'email', 'ada@example.com', $1,
			now() - interval '1 minute' + g * interval '1 ms', now() - interval '1 minute' + g * interval '1 ms', 4
		FROM generate_series(1, $2::int) g`, snap, backlog); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO notifications (id, order_id, kind, channel, order_snapshot, order_version)
		VALUES (gen_random_uuid(), 'ord-hook', 'order.ready', 'webhook', $1, 4)`, snap); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `ANALYZE notifications`); err != nil {
		t.Fatal(err)
	}
	webhook, email := notify.ChannelWebhook, notify.ChannelEmail
	for _, c := range []struct {
		name          string
		servedHere    []string // $3
		servedByOther bool
		wait          time.Duration
	}{
		{"email served here, its lane full", []string{webhook, email}, false, 10 * time.Minute},
		{"email served by another copy only", []string{webhook}, true, 10 * time.Minute},
		{"email served by nobody, its rows younger than the wait", []string{webhook}, false, 10 * time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			var setup []string
			if c.servedByOther {
				setup = append(setup, `INSERT INTO notification_channels VALUES ('email', now())`)
			}
			read := testenv.RowsRead(t, pool, setup, notify.RoundSQL,
				[]string{webhook}, []int32{4}, c.servedHere, time.Minute.Microseconds(), notify.ServedGrace.Microseconds(),
				c.wait.Microseconds())
			if read > 100 {
				t.Fatalf("a round claiming one webhook row read %.0f rows, with %d emails due: want the webhook's rows found without them", read, backlog)
			}
		})
	}
}
