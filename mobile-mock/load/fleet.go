package load

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	"github.com/handoff-dev/handoff/mobile-mock/terminal"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// fleet is one simulated terminal per store, each following its store's ticket feed and taking
// the run's new orders in hand: accept, mark ready, acknowledge the ticket. Hand-over is done
// when the shopper comes with the code (run.order).
type fleet struct {
	r      *run
	admin  *terminal.Admin
	ctx    context.Context // lives until stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // feeds and actions

	mu     sync.Mutex
	stores map[string]*storeTerminal
}

type storeTerminal struct {
	// term is the store's terminal once registered. registering is held by the one caller
	// registering it; a failed registration is not kept, so the next caller tries again (a
	// registration cut off by its shopper's context must not leave the store without a
	// terminal for the rest of the run).
	term        atomic.Pointer[terminal.Terminal]
	registering chan struct{}
	// counter is the store's counter: shoppers are handed their orders a few at a time, as at
	// a real one. (Tens of hand-overs at once from one terminal, which a loaded machine would
	// otherwise pile up, are what the pos-adapter limits as pickup-code guessing.)
	counter chan struct{}
}

// counterLanes is how many shoppers a store's counter hands orders to at once.
const counterLanes = 16

func newFleet(r *run, adminToken string) *fleet {
	ctx, cancel := context.WithCancel(context.Background())
	return &fleet{
		r:      r,
		admin:  terminal.NewAdmin(r.cfg.HTTPClient, r.cfg.Endpoints.POSURL, adminToken, connect.WithInterceptors(&r.calls)),
		ctx:    ctx,
		cancel: cancel,
		stores: map[string]*storeTerminal{},
	}
}

// connect registers a terminal for each store and starts following the feeds; it returns once
// every feed has been asked for.
func (f *fleet) connect(ctx context.Context, storeIDs []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, id := range storeIDs {
		g.Go(func() error {
			_, err := f.terminal(gctx, id)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// A feed asked for is not yet a feed serving: give the streams a moment to be set up, so
	// that the first orders' tickets are measured live rather than from the replayed backlog.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// terminal returns the store's terminal, registering it and following its feed the first
// time (a store found only when an order lands there gets one then).
func (f *fleet) terminal(ctx context.Context, storeID string) (*terminal.Terminal, error) {
	f.mu.Lock()
	st, ok := f.stores[storeID]
	if !ok {
		st = &storeTerminal{registering: make(chan struct{}, 1), counter: make(chan struct{}, counterLanes)}
		f.stores[storeID] = st
	}
	f.mu.Unlock()
	if term := st.term.Load(); term != nil {
		return term, nil
	}
	select {
	case st.registering <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("terminal for %s: %w", storeID, ctx.Err())
	}
	defer func() { <-st.registering }()
	if term := st.term.Load(); term != nil { // registered while this caller waited
		return term, nil
	}
	term, err := f.admin.Register(ctx, storeID, "mobile-mock load "+f.r.prefix)
	if err != nil {
		return nil, fmt.Errorf("terminal for %s: %w", storeID, err)
	}
	st.term.Store(term)
	f.wg.Go(func() {
		// A feed that breaks is reopened; each break is counted among the errors, so that a
		// feed down for the whole run shows there and not only as orders timing out CONFIRMED.
		err := term.Follow(f.ctx, nil, func(err error) { f.r.fail("StreamTickets", err) }, func(t *posv1.Ticket) { f.handle(term, t) })
		if err != nil && f.ctx.Err() == nil {
			f.r.fail("StreamTickets", err)
			f.r.cfg.Logf("ticket feed of %s stopped: %v", storeID, err)
		}
	})
	return term, nil
}

// handOver hands the order over at its store's counter, waiting for a free lane.
func (f *fleet) handOver(ctx context.Context, storeID, orderID, code string) error {
	term, err := f.terminal(ctx, storeID)
	if err != nil {
		return err
	}
	f.mu.Lock()
	counter := f.stores[storeID].counter
	f.mu.Unlock()
	select {
	case counter <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-counter }()
	_, err = term.HandOver(ctx, orderID, code)
	return err
}

// handle takes a ticket off the feed. Only the run's new orders are acted on, each once, off
// the feed's goroutine so one slow call does not hold up the store's other tickets. A call
// that fails is tried again (act); one that still fails leaves the ticket to be acted on when
// the feed sends it again (it is not acknowledged, so a reopened feed does), as a till shows
// such a ticket again.
func (f *fleet) handle(term *terminal.Terminal, t *posv1.Ticket) {
	if t.GetKind() != posv1.TicketKind_TICKET_KIND_NEW_ORDER || !f.r.ours(t.GetOrder()) {
		return
	}
	var raised time.Time
	if t.GetCreateTime() != nil {
		raised = t.GetCreateTime().AsTime()
	}
	if !f.r.ticketArrived(t.GetOrder(), time.Now(), raised) {
		return
	}
	f.wg.Go(func() {
		ctx, cancel := context.WithTimeout(f.ctx, f.r.cfg.OrderTimeout)
		defer cancel()
		accepted := f.act(ctx, "AcceptOrder", func() error {
			_, err := term.Accept(ctx, t.GetOrderId())
			return err
		})
		if !accepted || !f.act(ctx, "MarkReady", func() error {
			_, err := term.MarkReady(ctx, t.GetOrderId())
			return err
		}) {
			f.r.ticketFailed(t.GetOrder())
			return
		}
		if err := term.Ack(ctx, t.GetTicketId()); err != nil {
			f.r.fail("AckTicket", err)
		}
	})
}

// act makes one call of a ticket's action, trying it again after a failure that calling again
// may mend (an edge draining, a dropped connection) at most actAttempts times while ctx lives;
// each failure is counted. A call whose answer was lost but which took effect is answered as
// done when made again by the same terminal (fulfilment's repeated action).
func (f *fleet) act(ctx context.Context, rpc string, call func() error) bool {
	pause := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil {
			return true
		}
		f.r.fail(rpc, err)
		if attempt == actAttempts || !retryAction(connect.CodeOf(err)) {
			return false
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return false
		}
		pause *= 2
	}
}

// actAttempts bounds the calls act makes for one step of a ticket's action.
const actAttempts = 4

// retryAction reports whether a terminal's call failing with code is worth making again.
func retryAction(code connect.Code) bool {
	switch code {
	case connect.CodeUnavailable, connect.CodeAborted, connect.CodeInternal, connect.CodeUnknown, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// stop disconnects every terminal, waits for their work to end and revokes them: their
// credentials are of no use after the run, and a running system would otherwise gather live
// terminals run after run. It runs on a context of its own, as the run's may have ended
// (Ctrl-C).
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	f.mu.Lock()
	var terms []*terminal.Terminal
	for _, st := range f.stores {
		if term := st.term.Load(); term != nil {
			terms = append(terms, term)
		}
	}
	f.mu.Unlock()
	var g errgroup.Group
	g.SetLimit(8)
	var failed atomic.Int64
	var lastErr atomic.Pointer[error]
	for _, term := range terms {
		g.Go(func() error {
			if err := f.admin.Revoke(ctx, term.ID); err != nil {
				failed.Add(1)
				lastErr.Store(&err)
			}
			return nil
		})
	}
	_ = g.Wait()
	if n := failed.Load(); n > 0 {
		f.r.cfg.Logf("%d of the run's %d terminals could not be revoked (last: %v)", n, len(terms), *lastErr.Load())
	}
}

// revokeTimeout bounds revoking the run's terminals.
const revokeTimeout = 30 * time.Second
