package fulfilment

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/streams"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// orderUpdate is what a WatchOrder stream hears of a change: the order after it (as others
// see it: no pickup code, no history) and the history entries from seq first up to the
// order's version. A transition of this process hands over its whole history (first 1) or
// at least its own entries; an order event carries its one transition. Shared by every
// stream of the order: read only.
type orderUpdate struct {
	order   *fulfilmentv1.Order
	first   int64
	entries []*fulfilmentv1.Transition
}

// watchHub hands WatchOrder streams of this process the changes of their order: at once, with
// the new order in hand, from transitions made in this process, and from the order events for
// changes made anywhere (one core NATS subscription per process, fanned out by order id). A
// stream sends an update without reading the database when it follows on from what the stream
// sent last; otherwise (a gap: an event lost or still on its way) it re-reads the order, which
// is the truth. Updates it has already passed (each local change arrives twice: directly and
// as its event) cost nothing.
type watchHub struct {
	mu       sync.Mutex
	watchers map[string]map[*watcher]struct{}
}

// watcher is one stream's mailbox.
type watcher struct {
	wake    chan struct{} // one pending signal is enough
	mu      sync.Mutex
	pending []orderUpdate
	reread  bool // updates were dropped: read the order again
}

// watchMessages counts what WatchOrder streams send, by what a message was made from.
var watchMessages = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "handoff_fulfilment_watch_messages_total",
	Help: "WatchOrder messages sent, by source: first (the stream's opening read), update (a change handed over in this process or carried by an order event; no database read), reread (the order read again after a gap in the updates, or by the periodic safety net).",
}, []string{"source"})

// watchRereads counts the database reads of open streams after their first message.
var watchRereads = promauto.NewCounter(prometheus.CounterOpts{
	Name: "handoff_fulfilment_watch_rereads_total",
	Help: "Times a WatchOrder stream read its order again after its first message (a gap in the updates it heard, or the periodic safety net), whether or not it had changed.",
})

// maxPendingUpdates bounds a slow stream's mailbox; past it the stream re-reads instead.
const maxPendingUpdates = 16

func newWatchHub() *watchHub {
	return &watchHub{watchers: map[string]map[*watcher]struct{}{}}
}

func (h *watchHub) subscribe(orderID string) (*watcher, func()) {
	w := &watcher{wake: make(chan struct{}, 1)}
	h.mu.Lock()
	if h.watchers[orderID] == nil {
		h.watchers[orderID] = map[*watcher]struct{}{}
	}
	h.watchers[orderID][w] = struct{}{}
	h.mu.Unlock()
	return w, func() {
		h.mu.Lock()
		delete(h.watchers[orderID], w)
		if len(h.watchers[orderID]) == 0 {
			delete(h.watchers, orderID)
		}
		h.mu.Unlock()
	}
}

// watched reports whether any stream of this process follows the order: updates are only
// built for those.
func (h *watchHub) watched(orderID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers[orderID]) > 0
}

func (h *watchHub) idle() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers) == 0
}

// publish hands u to every stream of its order.
func (h *watchHub) publish(u orderUpdate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers[u.order.GetId()] {
		w.mu.Lock()
		if len(w.pending) < maxPendingUpdates {
			w.pending = append(w.pending, u)
		} else {
			w.pending, w.reread = w.pending[:0], true
		}
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// rereadAll tells every stream of this process to read its order again: after a NATS
// reconnect, the order events published while the connection was down were missed. The streams
// are woken spread over up to rereadSpread, one millisecond's worth each (a thousand reads a
// second), so that ten thousand streams do not all ask the database at once; a stream woken
// sooner by an update of its own reads at once.
func (h *watchHub) rereadAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ws := range h.watchers {
		n += len(ws)
	}
	spread := min(time.Duration(n)*time.Millisecond, rereadSpread)
	for _, ws := range h.watchers {
		for w := range ws {
			w.mu.Lock()
			w.pending, w.reread = w.pending[:0], true
			w.mu.Unlock()
			time.AfterFunc(rand.N(spread+1), func() {
				select {
				case w.wake <- struct{}{}:
				default:
				}
			})
		}
	}
}

// rereadSpread bounds how long after a NATS reconnect a stream may wait to read its order again.
const rereadSpread = 5 * time.Second

// take empties the mailbox: the updates by version, and whether to read the order again.
func (w *watcher) take() ([]orderUpdate, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	us, reread := w.pending, w.reread
	w.pending, w.reread = nil, false
	slices.SortStableFunc(us, func(a, b orderUpdate) int {
		return int(a.order.GetVersion() - b.order.GetVersion())
	})
	return us, reread
}

// localUpdate is the update of a change made in this process, for its watchers (nil when it
// has none): o after the change, with its whole history when the caller has it, else with the
// entries of changes.
func (h *watchHub) localUpdate(o *order, changes []change) *orderUpdate {
	if len(changes) == 0 || !h.watched(o.ID) {
		return nil
	}
	entries := o.History
	if int64(len(entries)) != o.Version || len(entries) == 0 || entries[0].Seq != 1 {
		entries = make([]historyEntry, len(changes))
		for i, c := range changes {
			entries[i] = c.entry
		}
	}
	bare := *o
	bare.History = nil
	u := &orderUpdate{order: bare.proto(viewOthers, nil), first: entries[0].Seq}
	for _, e := range entries {
		u.entries = append(u.entries, e.proto())
	}
	return u
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
		o := ev.GetOrder()
		if o == nil || !h.watched(o.GetId()) {
			return
		}
		// The event's order is the order as of its transition (record writes one event per
		// change, and only a new order's first entry, which has no event, shares its
		// transaction with another): its version is the transition's sequence.
		u := orderUpdate{order: o, first: o.GetVersion()}
		if ev.GetTransition() != nil {
			u.entries = []*fulfilmentv1.Transition{ev.GetTransition()}
		}
		o.History = nil
		h.publish(u)
	})
	if err != nil {
		return fmt.Errorf("fulfilment: subscribe to order events: %w", err)
	}
	// Events published while the connection was down are lost to this subscription (core NATS):
	// on the reconnect every stream reads its order again rather than wait for WatchPoll.
	lis := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(lis)
	for {
		select {
		case <-ctx.Done():
			_ = sub.Unsubscribe()
			return nil
		case _, ok := <-lis:
			if !ok {
				<-ctx.Done()
				_ = sub.Unsubscribe()
				return nil
			}
			log.Info("NATS reconnected; WatchOrder streams read their orders again (order events sent meanwhile were missed)")
			h.rereadAll()
		}
	}
}

// watchStream is what one WatchOrder stream has sent: the order as its shopper saw it last.
type watchStream struct {
	s    *Service
	sent *fulfilmentv1.Order // owner's view, history included
}

// follow turns u into the next message when it follows on from what was sent: nil, true when
// the stream is past it already; nil, false when there is a gap (read the order again).
func (st *watchStream) follow(u orderUpdate) (*fulfilmentv1.WatchOrderResponse, bool) {
	last := st.sent.GetVersion()
	v := u.order.GetVersion()
	if v <= last {
		return nil, true
	}
	n := int64(len(u.entries))
	if n == 0 || u.first < 1 || u.first > last+1 || u.first+n-1 != v || int64(len(st.sent.GetHistory())) < u.first-1 {
		return nil, false
	}
	o := proto.CloneOf(u.order)
	o.History = append(slices.Clone(st.sent.GetHistory()[:u.first-1]), u.entries...)
	if domain.Open(o.GetState()) {
		o.PickupCode = domain.PickupCode(st.s.secret, o.GetId())
	}
	return &fulfilmentv1.WatchOrderResponse{Order: o, Transition: u.entries[n-1]}, true
}

// reread reads the order's row and the history entries the stream has not sent yet (one
// round trip), and returns the next message, or nil when nothing changed.
func (st *watchStream) reread(ctx context.Context, sc scope) (*fulfilmentv1.WatchOrderResponse, error) {
	watchRereads.Inc()
	last := st.sent.GetVersion()
	cur, err := readOrder(ctx, st.s.db, st.sent.GetId(), last)
	if err == nil && (cur == nil || !sc.allows(cur)) {
		err = rpcerr.NotFound("order", st.sent.GetId())
	}
	if err != nil || cur.Version <= last {
		return nil, err
	}
	if int64(len(cur.History)) != cur.Version-last {
		return nil, fmt.Errorf("order %s: history %d..%d incomplete (%d entries)", cur.ID, last+1, cur.Version, len(cur.History))
	}
	entries := cur.History
	cur.History = nil
	u := orderUpdate{order: cur.proto(viewOthers, nil), first: last + 1}
	for _, e := range entries {
		u.entries = append(u.entries, e.proto())
	}
	msg, ok := st.follow(u)
	if !ok {
		return nil, fmt.Errorf("order %s: re-read does not follow on from version %d", cur.ID, last)
	}
	return msg, nil
}

// jittered is d give or take a fifth, at random: streams opened together (every app
// reconnecting after a restart) then poll spread out, not all in the same instant.
func jittered(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

// WatchOrder streams one of the shopper's orders: its current state first, then a message for
// every change (with the latest transition), until the order reaches a final state or ctx
// ends. A client that reconnects simply starts again and gets the current state first.
// Messages never go back: a change that arrives after a later one is skipped.
func (s *Service) WatchOrder(ctx context.Context, customerID, orderID string, send func(*fulfilmentv1.WatchOrderResponse) error) error {
	// Listen before the first read, so no change falls between the two.
	w, stop := s.hub.subscribe(orderID)
	defer stop()
	sc := scope{customerID: customerID}
	o, err := s.GetOrder(ctx, sc, orderID)
	if err != nil {
		return err
	}
	st := &watchStream{s: s, sent: o.proto(viewOwner, s.secret)}
	if err := send(&fulfilmentv1.WatchOrderResponse{Order: st.sent}); err != nil {
		return err
	}
	watchMessages.WithLabelValues("first").Inc()
	poll := time.NewTicker(jittered(s.cfg.WatchPoll))
	defer poll.Stop()
	for !domain.Final(st.sent.GetState()) {
		reread := false
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-poll.C:
			// The safety net for events lost on the way (core NATS is at most once).
			reread = true
		}
		updates, dropped := w.take()
		reread = reread || dropped
		for _, u := range updates {
			msg, ok := st.follow(u)
			if !ok {
				reread = true
				continue
			}
			if msg == nil {
				continue
			}
			if err := send(msg); err != nil {
				return err
			}
			watchMessages.WithLabelValues("update").Inc()
			st.sent = msg.GetOrder()
			if domain.Final(st.sent.GetState()) {
				return nil
			}
		}
		if !reread {
			continue
		}
		msg, err := st.reread(ctx, sc)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if msg == nil {
			continue
		}
		if err := send(msg); err != nil {
			return err
		}
		watchMessages.WithLabelValues("reread").Inc()
		st.sent = msg.GetOrder()
	}
	return nil
}
