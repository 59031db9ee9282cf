package posadapter

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// An order that expired READY was not collected; one that expired before it was ever ready
// was never made ready, and the ticket does not say the shopper failed to come.
func TestExpiryTicketSaysWhatWentWrong(t *testing.T) {
	o := &fulfilmentv1.Order{Id: "o1", PickupName: "Ada", PickupDeadline: timestamppb.Now()}
	if msg := ticketMessage(posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED, o, nil); !strings.Contains(msg, "did not collect") {
		t.Errorf("an uncollected order: %q", msg)
	}
	o.PickupDeadline = nil
	if msg := ticketMessage(posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED, o, nil); strings.Contains(msg, "collect") || !strings.Contains(msg, "not made ready") {
		t.Errorf("a never-ready order: %q", msg)
	}
}
