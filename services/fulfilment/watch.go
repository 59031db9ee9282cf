package fulfilment

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/streams"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// watchHub tells WatchOrder streams of this process that their order changed. It hears of
// changes from the order events (whichever process made them: one core NATS subscription per
// process, fanned out by order id) and, at once, from transitions made in this process. A
// signal only says "look again": the stream re-reads the order from the database, which is
// the truth, so a duplicate or early signal costs a read and a lost one is caught by the
// stream's periodic re-read.
type watchHub struct {
	mu       sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

func newWatchHub() *watchHub {
	return &watchHub{watchers: map[string]map[chan struct{}]struct{}{}}
}

func (h *watchHub) subscribe(orderID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.watchers[orderID] == nil {
		h.watchers[orderID] = map[chan struct{}]struct{}{}
	}
	h.watchers[orderID][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.watchers[orderID], ch)
		if len(h.watchers[orderID]) == 0 {
			delete(h.watchers, orderID)
		}
		h.mu.Unlock()
	}
}

func (h *watchHub) changed(orderID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.watchers[orderID] {
		select {
		case ch <- struct{}{}:
		default: // one pending signal is enough
		}
	}
}

func (h *watchHub) idle() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers) == 0
}

// run follows the order events until ctx ends.
func (h *watchHub) run(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
	sub, err := nc.Subscribe(streams.EventSubject("fulfilment", "order", "*"), func(m *nats.Msg) {
		if h.idle() {
			return
		}
		var ev fulfilmentv1.OrderChanged
		if err := proto.Unmarshal(m.Data, &ev); err != nil {
			log.Warn("undecodable order event", "subject", m.Subject, "err", err)
			return
		}
		h.changed(ev.GetOrder().GetId())
	})
	if err != nil {
		return fmt.Errorf("fulfilment: subscribe to order events: %w", err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}

// WatchOrder streams one of the shopper's orders: its current state first, then a message for
// every change (with the latest transition), until the order reaches a final state or ctx
// ends. A client that reconnects simply starts again and gets the current state first.
func (s *Service) WatchOrder(ctx context.Context, customerID, orderID string, send func(*fulfilmentv1.WatchOrderResponse) error) error {
	// Listen before the first read, so no change falls between the two.
	changed, stop := s.hub.subscribe(orderID)
	defer stop()
	sc := scope{customerID: customerID}
	o, err := s.GetOrder(ctx, sc, orderID)
	if err != nil {
		return err
	}
	if err := send(&fulfilmentv1.WatchOrderResponse{Order: o.proto(viewOwner, s.secret)}); err != nil {
		return err
	}
	last := o.Version
	poll := time.NewTicker(s.cfg.WatchPoll)
	defer poll.Stop()
	for !domain.Final(o.State) {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-poll.C:
		}
		// The row first: a signal often finds nothing new (each change signals twice, from
		// this process and from its event), and then the history is not read at all.
		cur, err := loadOrder(ctx, s.db, orderID, false)
		if err == nil && (cur == nil || !sc.allows(cur)) {
			err = rpcerr.NotFound("order", orderID)
		}
		if err == nil && cur.Version > last {
			err = loadHistory(ctx, s.db, cur)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if cur.Version <= last {
			continue
		}
		o = cur
		msg := &fulfilmentv1.WatchOrderResponse{Order: o.proto(viewOwner, s.secret)}
		if n := len(o.History); n > 0 {
			msg.Transition = o.History[n-1].proto()
		}
		if err := send(msg); err != nil {
			return err
		}
		last = o.Version
	}
	return nil
}
