package posadapter

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// KeyedStatements are statements that find their rows by key, by name.
var KeyedStatements = map[string]string{"record deliveries": recordDeliveriesSQL}

// RaiseTickets raises tickets in tx as the event consumers do and gives those raised.
func (a *Adapter) RaiseTickets(ctx context.Context, tx pgx.Tx, tickets ...*posv1.Ticket) ([]*posv1.Ticket, error) {
	items := make([]ticketToRaise, len(tickets))
	for i, t := range tickets {
		items[i] = ticketToRaise{t: t}
	}
	raised, _, err := a.raiseTickets(ctx, tx, items)
	return raised, err
}

// OpenStreams is how many ticket streams this adapter's hub holds.
func (a *Adapter) OpenStreams() int {
	a.hub.mu.Lock()
	defer a.hub.mu.Unlock()
	n := 0
	for _, subs := range a.hub.stores {
		n += len(subs)
	}
	return n
}

// ClaimDeliveries runs one claim round as the dispatcher does, with room for limit deliveries
// and nothing under way, and gives how many it claimed and how long until the next pending one
// falls due (nil: none).
func (a *Adapter) ClaimDeliveries(ctx context.Context, limit int) (int, *time.Duration, error) {
	claims, next, _, err := a.claimDeliveries(ctx, limit, min(limit, webhookProbeSlots), nil, nil, "", false)
	return len(claims), next, err
}

// ListTerminalsSQL and ListStoreTerminalsSQL are ListTerminals' pages, of the chain and of a store.
const (
	ListTerminalsSQL      = listTerminalsSQL
	ListStoreTerminalsSQL = listStoreTerminalsSQL
)
