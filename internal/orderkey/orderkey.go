// Package orderkey derives an order's id from the checkout that makes it: the customer and the
// checkout's idempotency key. Fulfilment names the order so, and every retry of the checkout,
// in any process, works on the same order (and inventory, idempotent by order id, on the same
// holds); the cart derives it too, to tell whether an order it hears of is its own lease's.
package orderkey

import "github.com/handoff-dev/handoff/internal/outbox"

// OrderID is the id of the order that customerID's checkout with idempotencyKey creates.
func OrderID(customerID, idempotencyKey string) string {
	return outbox.DeterministicID("fulfilment.order", customerID, idempotencyKey)
}
