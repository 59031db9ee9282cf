package posadapter_test

import (
	"slices"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/orderkey"
	"github.com/handoff-dev/handoff/internal/outbox"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// Every event an order can have while it stays CONFIRMED, read alone (its confirmed event lost
// with the stream, and this the event fulfilment announces again as the order's current one),
// raises the order's NEW_ORDER ticket, with the id its confirmed event's ticket has. The events
// come from fulfilment's transition table, so one added there is covered here.
func TestEveryEventOfAnOrderStillConfirmedRaisesItsNewOrderTicket(t *testing.T) {
	var events []string
	for _, a := range domain.Actions {
		r := domain.RuleOf(a)
		if slices.Contains(r.From, domain.Confirmed) && (r.To == 0 || r.To == domain.Confirmed) && r.Event != "" {
			events = append(events, r.Event)
		}
	}
	if len(events) == 0 {
		t.Fatal("no event keeps an order CONFIRMED: the check below would prove nothing")
	}
	e := newEnv(t)
	_, cred := e.register("Counter", "lone-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "lone-1")
	for i, event := range events {
		o := then(order("lone-1", i), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED) // version 3
		e.publish(event, o, nil)
		want := outbox.DeterministicID("pos-ticket", orderkey.ConfirmedEventID(o.GetId()))
		t.Logf("order %s, still CONFIRMED, read only as %s", o.GetId(), event)
		got := f.take(1, 10*time.Second)
		if got[0].GetKind() != posv1.TicketKind_TICKET_KIND_NEW_ORDER || got[0].GetOrderId() != o.GetId() || got[0].GetTicketId() != want {
			t.Fatalf("order still CONFIRMED whose only event read is %s: first ticket %v %s for %s, want NEW_ORDER %s", event, got[0].GetKind(), got[0].GetTicketId(), got[0].GetOrderId(), want)
		}
		// The event's own ticket, if it raises one (a check-in, an escalation...).
		if event != "rescheduled" {
			f.take(1, 10*time.Second)
		}
	}
	f.quiet(200 * time.Millisecond)
}
