// Package personal clears a shopper's personal data from the copies of an order that services
// keep as protobuf (an event waiting in an outbox, a POS ticket, an escalation timer), for an
// erasure request (fulfilment's ForgetCustomer). The business record (lines, amounts, states
// and times) stays.
package personal

import (
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// ForgottenSubject is the subject of fulfilment's CustomerForgotten events.
const ForgottenSubject = "handoff.fulfilment.customer.forgotten"

// RedactOrder clears o's customer id, pickup name and note, and the id of every customer
// actor in its history, and says whether it changed anything. The Order message carries no
// email. nil is left alone.
func RedactOrder(o *fulfilmentv1.Order) bool {
	if o == nil {
		return false
	}
	changed := o.CustomerId != "" || o.PickupName != "" || o.CustomerNote != ""
	o.CustomerId, o.PickupName, o.CustomerNote = "", "", ""
	for _, tr := range o.History {
		changed = RedactActor(tr.GetActor()) || changed
	}
	return changed
}

// RedactActor clears the id of a customer actor (the shopper's customer id) and says whether
// it did. Staff, admin and system actors keep theirs.
func RedactActor(a *commonv1.Actor) bool {
	if a.GetKind() != commonv1.ActorKind_ACTOR_KIND_CUSTOMER || a.GetId() == "" {
		return false
	}
	a.Id = ""
	return true
}

// RedactOrderChanged is RedactOrder for an OrderChanged event, its transition's actor too.
func RedactOrderChanged(ev *fulfilmentv1.OrderChanged) bool {
	changed := RedactOrder(ev.GetOrder())
	return RedactActor(ev.GetTransition().GetActor()) || changed
}
