// Package orderkey derives an order's id from the checkout that makes it: the customer and the
// checkout's idempotency key. Fulfilment names the order so, and every retry of the checkout,
// in any process, works on the same order (and inventory, idempotent by order id, on the same
// holds); the cart derives it too, to tell whether an order it hears of is its own lease's.
// An order's events are named from the order and their history entry the same way
// (EventID), so that an event written again is a duplicate everywhere.
package orderkey

import (
	"strconv"

	"github.com/handoff-dev/handoff/internal/outbox"
)

// OrderID is the id of the order that customerID's checkout with idempotencyKey creates.
func OrderID(customerID, idempotencyKey string) string {
	return outbox.DeterministicID("fulfilment.order", customerID, idempotencyKey)
}

// ConfirmSeq is the history entry of an order's confirmation: an order is created PENDING
// (entry 1), and its one way on from PENDING that is not an end is its confirmation.
const ConfirmSeq = 2

// EventID is the id of the OrderChanged event of the order's history entry seq.
func EventID(orderID string, seq int64) string {
	return outbox.DeterministicID("order", orderID, strconv.FormatInt(seq, 10))
}

// ConfirmedEventID is the id of the order's confirmed event, which the pos-adapter's NEW_ORDER
// ticket of the order is named from, whichever event of the order raised it.
func ConfirmedEventID(orderID string) string { return EventID(orderID, ConfirmSeq) }
