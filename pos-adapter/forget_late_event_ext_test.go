package posadapter_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/personal"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// The adapter hears an erasure (CustomerForgotten) and order events through two consumers that
// run independently, so an event of an erased order published before the erasure (relayed
// while it ran, or simply not read yet by the busier order consumer) can be read after it. The
// ticket it raises, and any escalation timer, must not bring back the shopper's name, note and
// customer id.
func TestATicketRaisedAfterTheErasureFromAnOlderEventKeepsNoPersonalData(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `INSERT INTO store_settings (store_id, escalate_after) VALUES ('s1', interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	confirmed := order("s1", 1)
	confirmed.PickupName, confirmed.CustomerNote = "Ada Lovelace", "by the window please"
	cancelled := then(confirmed, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED)

	// The erasure, heard first.
	data, err := proto.Marshal(&fulfilmentv1.CustomerForgotten{CustomerId: confirmed.GetCustomerId(), Orders: []*fulfilmentv1.ForgottenOrder{{
		OrderId: confirmed.GetId(), StoreId: "s1", CreateTime: confirmed.GetCreateTime(),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(personal.ForgottenSubject)
	msg.Data = data
	forgetID := outbox.DeterministicID("test-forget", confirmed.GetId())
	msg.Header.Set(jetstream.MsgIDHeader, forgetID)
	msg.Header.Set(outbox.EventTypeHeader, "handoff.fulfilment.v1.CustomerForgotten")
	msg.Header.Set(outbox.OccurredAtHeader, time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := e.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	waitRows(t, e, `SELECT count(*) FROM processed_events WHERE consumer = $1 AND event_id = $2`, 1, posadapter.ForgottenConsumer, forgetID)

	// Then the order's events from before it: confirmed in one batch, cancelled in the next.
	e.publish("confirmed", confirmed, &fulfilmentv1.Transition{ToState: confirmed.GetState(), Time: timestamppb.Now()})
	waitRows(t, e, `SELECT count(*) FROM tickets WHERE order_id = $1`, 1, confirmed.GetId())
	e.publish("cancelled", cancelled, nil)
	waitRows(t, e, `SELECT count(*) FROM tickets WHERE order_id = $1`, 2, confirmed.GetId())

	check := func(tk *posv1.Ticket) {
		o := tk.GetOrder()
		if o.GetPickupName() != "" || o.GetCustomerNote() != "" || o.GetCustomerId() != "" ||
			strings.Contains(tk.GetMessage(), "Ada") || strings.Contains(tk.GetMessage(), "window") {
			t.Errorf("%v ticket of the erased order raised after the erasure keeps the shopper's data: name %q, note %q, customer %q, message %q",
				tk.GetKind(), o.GetPickupName(), o.GetCustomerNote(), o.GetCustomerId(), tk.GetMessage())
		}
	}
	for _, q := range []string{
		`SELECT payload FROM tickets WHERE order_id = $1`,
		`SELECT payload FROM outbox WHERE event_type = 'handoff.pos.v1.TicketRaised' AND $1::text IS NOT NULL`,
	} {
		rows, err := e.pool.Query(ctx, q, confirmed.GetId())
		if err != nil {
			t.Fatal(err)
		}
		payloads, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range payloads {
			tk := new(posv1.Ticket)
			if strings.Contains(q, "outbox") {
				var ev posv1.TicketRaised
				if err := proto.Unmarshal(b, &ev); err != nil {
					t.Fatal(err)
				}
				tk = ev.GetTicket()
			} else if err := proto.Unmarshal(b, tk); err != nil {
				t.Fatal(err)
			}
			check(tk)
		}
	}
	var timers int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM escalation_timers WHERE order_id = $1 AND position($2::bytea in order_payload) > 0`,
		confirmed.GetId(), []byte("Ada Lovelace")).Scan(&timers); err != nil {
		t.Fatal(err)
	}
	if timers != 0 {
		t.Error("the erased order's escalation timer, set after the erasure, keeps the shopper's name")
	}
}

// waitRows waits until query counts want rows.
func waitRows(t *testing.T, e *env, query string, want int, args ...any) {
	t.Helper()
	for {
		var n int
		if err := e.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= want {
			return
		}
		if t.Context().Err() != nil {
			t.Fatalf("never %d rows of %s", want, query)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
