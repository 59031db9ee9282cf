package posadapter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/tracing"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// AllTicketsSubject is every store's tickets; the hub's one subscription.
const AllTicketsSubject = "handoff.store.*.ticket.>"

// TerminalRevokedSubject carries TerminalRevoked to every adapter copy.
var TerminalRevokedSubject = streams.EventSubject("pos", "terminal", "revoked")

// liveBuffer is how many live tickets wait for one slow stream before it falls back to reading
// the database.
const liveBuffer = 256

// feedSub is one open StreamTickets call as the hub sees it.
type feedSub struct {
	store    string
	reader   string
	terminal string
	live     chan *posv1.Ticket
	wake     chan struct{} // catch up from the database
	// ended is closed when the stream must stop (its terminal was revoked, or the reader opened
	// too many streams); why says how it ends, and is set before ended is closed.
	ended chan struct{}
	why   error
	once  sync.Once
	// wc cuts the response's writes, a grace after the stream is ended; nil when the request
	// came without it.
	wc *edge.WriteControl
	// cursor is the last sequence the stream has sent or skipped as acknowledged.
	cursor atomic.Int64
	// checked is the cursor seen by the previous check (hub goroutine, under hub.mu).
	checked int64
}

func (s *feedSub) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// end stops the stream with err as its status; the first call wins. A stream that stops sends
// nothing more at once; one stuck in a send (its client reads nothing: a half-open connection,
// a stolen tablet set aside) has its writes cut after the grace, so that it ends then rather
// than when TCP gives up, minutes later, holding its goroutine and buffers till then.
func (s *feedSub) end(err error) {
	s.once.Do(func() {
		s.why = err
		close(s.ended)
		s.wc.CutLater()
	})
}

func (s *feedSub) isEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

var errTerminalRevoked = connect.NewError(connect.CodeUnauthenticated, errors.New("terminal credential revoked"))

// hub routes live tickets from the process's one NATS subscription to the open streams of
// their store, closes the streams of revoked terminals, and wakes streams that fell behind.
type hub struct {
	a         *Adapter
	mu        sync.Mutex
	stores    map[string]map[*feedSub]struct{}
	terminals map[string]map[*feedSub]struct{} // by terminal id
	// byReader holds each reader's streams of each store, oldest first, to cap how many it
	// keeps open (readerStore keys).
	byReader map[readerStore][]*feedSub
}

func newHub(a *Adapter) *hub {
	return &hub{a: a, stores: map[string]map[*feedSub]struct{}{}, terminals: map[string]map[*feedSub]struct{}{},
		byReader: map[readerStore][]*feedSub{}}
}

// readerStore is one reader's feed of one store: a terminal of several stores (or a member of
// staff following several) keeps a stream per store, and only more than that is a pile-up.
type readerStore struct{ reader, store string }

// add registers a new stream of c for store. Past Config.MaxStreamsPerReader open streams of
// one reader for one store, its oldest are ended: a terminal that reconnects keeps streams its network left
// half-open, and one whose client leaks streams would otherwise pile them up without bound.
// The newest wins because it is the one a working client is reading.
func (h *hub) add(store string, c caller, wc *edge.WriteControl) *feedSub {
	s := &feedSub{store: store, reader: c.reader(), terminal: c.terminal,
		live: make(chan *posv1.Ticket, liveBuffer), wake: make(chan struct{}, 1), ended: make(chan struct{}),
		wc: wc}
	h.mu.Lock()
	defer h.mu.Unlock()
	addTo(h.stores, store, s)
	if s.terminal != "" {
		addTo(h.terminals, s.terminal, s)
	}
	k := readerStore{s.reader, store}
	h.byReader[k] = append(h.byReader[k], s)
	var open []*feedSub
	for _, o := range h.byReader[k] {
		if !o.isEnded() {
			open = append(open, o)
		}
	}
	for _, o := range open[:max(0, len(open)-h.a.cfg.MaxStreamsPerReader)] {
		o.end(connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"more than %d ticket streams of store %s are open for this reader: the oldest is closed", h.a.cfg.MaxStreamsPerReader, store)))
	}
	return s
}

func (h *hub) remove(s *feedSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	removeFrom(h.stores, s.store, s)
	if s.terminal != "" {
		removeFrom(h.terminals, s.terminal, s)
	}
	k := readerStore{s.reader, s.store}
	if rest := slices.DeleteFunc(h.byReader[k], func(o *feedSub) bool { return o == s }); len(rest) > 0 {
		h.byReader[k] = rest
	} else {
		delete(h.byReader, k)
	}
}

func addTo(m map[string]map[*feedSub]struct{}, k string, s *feedSub) {
	if m[k] == nil {
		m[k] = map[*feedSub]struct{}{}
	}
	m[k][s] = struct{}{}
}

func removeFrom(m map[string]map[*feedSub]struct{}, k string, s *feedSub) {
	delete(m[k], s)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// revoke closes every open stream of a terminal in this process.
func (h *hub) revoke(terminal string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.terminals[terminal] {
		s.end(errTerminalRevoked)
	}
}

// deliver hands committed tickets to the open streams of their stores. A stream skips one it
// has sent already: each ticket comes here twice in the process that raised it (once right
// after its commit, once from JetStream) and once in every other.
func (h *hub) deliver(tickets ...*posv1.Ticket) {
	if len(tickets) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range tickets {
		for s := range h.stores[t.GetStoreId()] {
			select {
			case s.live <- t:
			default:
				// A slow stream: it reads the database once it has room again.
				s.poke()
			}
		}
	}
}

// ticketFeed names the live feed's processing of a ticket in traces: the order's trace ends
// with its ticket handed to the store's open streams.
const ticketFeed = "pos-adapter-ticket-feed"

// run subscribes to every store's tickets and to revocations, and checks open streams against
// the database every CatchUpInterval, until ctx ends.
func (h *hub) run(ctx context.Context) error {
	nc := h.a.cfg.NC
	tickets, err := nc.Subscribe(AllTicketsSubject, func(m *nats.Msg) {
		var ev posv1.TicketRaised
		if err := proto.Unmarshal(m.Data, &ev); err != nil || ev.GetTicket() == nil {
			h.a.log.Warn("undecodable ticket on the live feed", "subject", m.Subject, "err", err)
			return
		}
		// No webhook wake-up here: the copy that raised the ticket wakes its own dispatcher
		// when it queued a delivery, and a wake-up per ticket would cost a claim per order.
		_, span := tracing.StartProcessing(context.Background(), ticketFeed, m.Subject, m.Header)
		h.deliver(ev.GetTicket())
		tracing.EndProcessing(span, nil)
	})
	if err != nil {
		return fmt.Errorf("pos-adapter: subscribe to %s: %w", AllTicketsSubject, err)
	}
	defer func() { _ = tickets.Unsubscribe() }()
	// Never drop live tickets in the client library; a stream that cannot keep up is handled
	// per stream (see deliver).
	_ = tickets.SetPendingLimits(-1, -1)
	revocations, err := nc.Subscribe(TerminalRevokedSubject, func(m *nats.Msg) {
		var ev posv1.TerminalRevoked
		if err := proto.Unmarshal(m.Data, &ev); err == nil && ev.GetTerminal().GetId() != "" {
			h.a.credentials.revoke(ev.GetTerminal().GetId())
			h.revoke(ev.GetTerminal().GetId())
		}
	})
	if err != nil {
		return fmt.Errorf("pos-adapter: subscribe to %s: %w", TerminalRevokedSubject, err)
	}
	defer func() { _ = revocations.Unsubscribe() }()
	if err := nc.FlushTimeout(5 * time.Second); err != nil && ctx.Err() == nil {
		h.a.log.Warn("flush live subscriptions", "err", err)
	}

	t := time.NewTicker(h.a.cfg.CatchUpInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := h.check(ctx); err != nil && ctx.Err() == nil {
			h.a.log.Warn("feed check failed", "err", err)
		}
	}
}

// check wakes every stream that is behind its store's last sequence and made no progress since
// the previous check (its newest live ticket was lost on the way), and closes the streams of
// terminals revoked through a copy whose event has not arrived.
func (h *hub) check(ctx context.Context) error {
	h.mu.Lock()
	stores := make([]string, 0, len(h.stores))
	for s := range h.stores {
		stores = append(stores, s)
	}
	terminals := make([]string, 0, len(h.terminals))
	for t := range h.terminals {
		terminals = append(terminals, t)
	}
	h.mu.Unlock()
	if len(stores) == 0 {
		return nil
	}
	rows, err := h.a.db.Query(ctx, `SELECT store_id, last_seq FROM store_feeds WHERE store_id = ANY ($1)`, stores)
	if err != nil {
		return err
	}
	last := map[string]int64{}
	var (
		store string
		seq   int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&store, &seq}, func() error { last[store] = seq; return nil }); err != nil {
		return err
	}
	h.mu.Lock()
	for store, subs := range h.stores {
		for s := range subs {
			cur := s.cursor.Load()
			if cur < last[store] && s.checked == cur {
				s.poke()
			}
			s.checked = cur
		}
	}
	h.mu.Unlock()

	if len(terminals) > 0 {
		rows, err := h.a.db.Query(ctx, `SELECT id FROM terminals WHERE id = ANY ($1) AND revoke_time IS NOT NULL`, terminals)
		if err != nil {
			return err
		}
		revoked, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, id := range revoked {
			h.a.credentials.revoke(id)
			h.revoke(id)
		}
	}
	return nil
}

// streamTickets is StreamTickets: the reader's unacknowledged backlog, in order, then live.
// A stream opened with a staff token ends when the token expires (a terminal's credential is
// checked for revocation while it streams instead).
func (a *Adapter) streamTickets(ctx context.Context, storeID string, stream *connect.ServerStream[posv1.StreamTicketsResponse]) error {
	c, err := a.forStore(ctx, storeID)
	if err != nil {
		return err
	}
	if c.terminal == "" {
		return edge.UntilExpiry(ctx, c.principal.Expires, func(ctx context.Context) error { return a.feedTickets(ctx, c, storeID, stream) })
	}
	return a.feedTickets(ctx, c, storeID, stream)
}

// feedTickets streams storeID's tickets to c.
func (a *Adapter) feedTickets(ctx context.Context, c caller, storeID string, stream *connect.ServerStream[posv1.StreamTicketsResponse]) error {
	// Registered before the backlog is read: a ticket committed from now on arrives live, one
	// committed before is in the backlog, some are in both and are sent once.
	wc := edge.WriteControlOf(ctx)
	sub := a.hub.add(storeID, c, wc)
	defer a.hub.remove(sub)
	streamsOpen.Inc()
	defer streamsOpen.Dec()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnDrain := context.AfterFunc(a.draining, func() {
		cancel()
		wc.CutLater() // a send stuck on a client that reads nothing must not hold the shutdown
	})
	defer stopOnDrain()

	if c.terminal != "" {
		// Also the stream's own look at the terminal, now that the hub would end it on a
		// revocation: one committed before (by another copy, its event still on the way, while
		// this copy's credential cache still holds the terminal as good) ends it here.
		tag, err := a.db.Exec(ctx, `UPDATE terminals SET last_seen_time = now() WHERE id = $1 AND revoke_time IS NULL`, c.terminal)
		if err != nil {
			return a.internal(ctx, "record terminal seen", err)
		}
		if tag.RowsAffected() == 0 {
			a.credentials.revoke(c.terminal)
			return errTerminalRevoked
		}
	}
	// Headers now, before any ticket: the client knows it is connected (and a Connect or
	// gRPC-web client stops waiting for the response) even when there is nothing to send.
	if err := stream.Send(nil); err != nil {
		return a.streamEnd(ctx, "open the stream", err)
	}
	var cursor int64
	if err := a.db.QueryRow(ctx, `
		SELECT coalesce(
			-- The lowest sequence in the window, not the earliest time: create_time is taken before
			-- the sequence is, so the two orders can differ and a time-based start could skip one.
			(SELECT min(seq) - 1 FROM tickets WHERE store_id = $1 AND create_time >= now() - $2::bigint * interval '1 microsecond'),
			(SELECT last_seq FROM store_feeds WHERE store_id = $1),
			0)`, storeID, a.cfg.ReplayWindow.Microseconds()).Scan(&cursor); err != nil {
		return a.streamEnd(ctx, "find the feed's start", err)
	}
	sub.cursor.Store(cursor)

	// ended is checked before every send, not only between waits: a terminal revoked while it
	// reads a long backlog slowly (a stolen tablet) gets nothing more.
	// So is ctx: a staff token expired, or the adapter draining, sends nothing more either.
	ended := func() error {
		if sub.isEnded() {
			return sub.why
		}
		if ctx.Err() != nil {
			return a.streamEnd(ctx, "", nil)
		}
		return nil
	}

	// catchUp sends what the database has past the cursor that this reader has not
	// acknowledged. Rows are read a page at a time and sent after the page is read, so a slow
	// client never holds a database connection. Tickets the reader acknowledged are passed over
	// in the database: a terminal reconnecting to a busy store's feed (every terminal, after a
	// restart of the adapter) would otherwise fetch and skip the whole replay window. The page
	// comes with the feed's last sequence as the same statement saw it: every ticket up to it had
	// committed (they commit in sequence order, see store_feeds), so once the page is not full
	// the cursor moves there, past the acknowledged ones.
	catchUp := func() error {
		const page = 256
		type row struct {
			feedEnd int64
			seq     *int64
			payload []byte
		}
		for {
			rows, err := a.db.Query(ctx, `
				SELECT f.last_seq, t.seq, t.payload
				FROM store_feeds f
				LEFT JOIN LATERAL (
					SELECT t.seq, t.payload FROM tickets t
					WHERE t.store_id = f.store_id AND t.seq > $2
						AND NOT EXISTS (SELECT 1 FROM ticket_acks k WHERE k.reader = $3 AND k.ticket_id = t.ticket_id)
					ORDER BY t.seq LIMIT $4) t ON true
				WHERE f.store_id = $1`,
				storeID, cursor, sub.reader, page)
			if err != nil {
				return a.streamEnd(ctx, "read the feed", err)
			}
			batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
				var x row
				return x, r.Scan(&x.feedEnd, &x.seq, &x.payload)
			})
			if err != nil {
				return a.streamEnd(ctx, "read the feed", err)
			}
			sentRows := 0
			for _, r := range batch {
				if r.seq == nil {
					continue // the feed has nothing more for this reader
				}
				sentRows++
				if err := ended(); err != nil {
					return err
				}
				var t posv1.Ticket
				if err := proto.Unmarshal(r.payload, &t); err != nil {
					return a.streamEnd(ctx, "decode a stored ticket", fmt.Errorf("ticket %d of store %s: %w", *r.seq, storeID, err))
				}
				t.Sequence = uint64(*r.seq)
				if err := stream.Send(&posv1.StreamTicketsResponse{Ticket: &t}); err != nil {
					return a.streamEnd(ctx, "send the feed", err)
				}
				sent("backlog", &t)
				cursor = *r.seq
				sub.cursor.Store(cursor)
			}
			if sentRows < page {
				if len(batch) > 0 && batch[0].feedEnd > cursor {
					cursor = batch[0].feedEnd
					sub.cursor.Store(cursor)
				}
				return nil
			}
		}
	}
	if err := catchUp(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return a.streamEnd(ctx, "", nil)
		case <-sub.ended:
			return sub.why
		case <-sub.wake:
			if err := catchUp(); err != nil {
				return err
			}
		case t := <-sub.live:
			seq := int64(t.GetSequence())
			switch {
			case seq <= cursor:
				// Sent from the backlog already.
			case seq == cursor+1:
				if err := ended(); err != nil {
					return err
				}
				if err := stream.Send(&posv1.StreamTicketsResponse{Ticket: t}); err != nil {
					return a.streamEnd(ctx, "send a live ticket", err)
				}
				sent("live", t)
				cursor = seq
				sub.cursor.Store(seq)
			default:
				// A gap: what is missing is in the database (it was committed before it was
				// published, and so before this later one).
				if err := catchUp(); err != nil {
					return err
				}
			}
		}
	}
}

// streamEnd is how a stream ends when its context ends or a step fails: Unavailable while the
// adapter drains (clients reconnect), the client's own cancellation as it is, anything else
// logged and hidden.
func (a *Adapter) streamEnd(ctx context.Context, what string, err error) error {
	if a.draining.Err() != nil {
		return connect.NewError(connect.CodeUnavailable, edge.Restarting("pos-adapter is restarting: reconnect to resume the feed"))
	}
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	return a.internal(ctx, what, err)
}

// ackTicket records that the caller has handled a ticket of storeID.
func (a *Adapter) ackTicket(ctx context.Context, storeID, ticketID string) error {
	c, err := a.forStore(ctx, storeID)
	if err != nil {
		return err
	}
	id, err := uuid.Parse(ticketID)
	if err != nil {
		return a.fail(ctx, "", rpcerr.Invalid("ticket_id", "not a ticket id"))
	}
	// Canonical form: uuid.Parse also takes forms Postgres refuses (urn:uuid:…), and one such
	// ack would fail the batch it joins.
	exists, err := a.acks.Do(ctx, ackReq{ticketID: id.String(), storeID: storeID, reader: c.reader()})
	if err != nil {
		return a.internal(ctx, "record acknowledgement", err)
	}
	if !exists {
		return a.fail(ctx, "", rpcerr.NotFound("ticket of store "+storeID, ticketID))
	}
	// Last seen to the minute; this process writes it at most once a minute per terminal.
	if c.terminal != "" && a.credentials.recordSeen(c.terminal, time.Now(), time.Minute) {
		if _, err := a.db.Exec(ctx, `UPDATE terminals SET last_seen_time = now()
			WHERE id = $1 AND (last_seen_time IS NULL OR last_seen_time < now() - interval '1 minute')`, c.terminal); err != nil {
			a.log.Warn("record terminal seen", "terminal", c.terminal, "err", err)
		}
	}
	return nil
}

func newUUID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new id: %w", err)
	}
	return id.String(), nil
}
