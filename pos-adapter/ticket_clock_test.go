package posadapter

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// Staff read a ticket's times on their own store's clock, as the shopper's e-mail and
// fulfilment's reminder give them: a Seattle barista told "ready by 01:30 UTC" has to work out
// that it means half past six in the evening, and a window ending the next day says so.
func TestTicketTimesAreOnTheStoresClock(t *testing.T) {
	// 01:30 UTC on 2 July is 18:30 PDT on 1 July.
	readyBy := time.Date(2026, 7, 2, 1, 30, 0, 0, time.UTC)
	o := &fulfilmentv1.Order{Id: "o1", PickupName: "Ada", StoreTimeZone: "America/Los_Angeles",
		ReadyByTime: timestamppb.New(readyBy), PickupDeadline: timestamppb.New(readyBy.Add(2 * time.Hour))}
	if msg := ticketMessage(posv1.TicketKind_TICKET_KIND_NEW_ORDER, o, nil); !strings.Contains(msg, "18:30 PDT") || strings.Contains(msg, "UTC") {
		t.Errorf("new order: %q, want the ready-by time on the store's clock (18:30 PDT)", msg)
	}
	if msg := ticketMessage(posv1.TicketKind_TICKET_KIND_EXPIRY_REMINDER, o, nil); !strings.Contains(msg, "20:30 PDT") || strings.Contains(msg, "UTC") {
		t.Errorf("expiry reminder: %q, want the deadline on the store's clock (20:30 PDT)", msg)
	}
	// A day that is not today on the store's clock is named.
	if msg := ticketMessage(posv1.TicketKind_TICKET_KIND_NEW_ORDER, o, nil); !strings.Contains(msg, "Wed 1 Jul 18:30 PDT") {
		t.Errorf("new order on another day: %q, want the day named", msg)
	}
	// An order that does not name its zone keeps UTC.
	o.StoreTimeZone = ""
	if msg := ticketMessage(posv1.TicketKind_TICKET_KIND_NEW_ORDER, o, nil); !strings.Contains(msg, "01:30 UTC") {
		t.Errorf("new order without a zone: %q", msg)
	}
}
