package fulfilment_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// An events stream made anew (deleted and declared again) gets each open order's current
// event again, the same event (id and payload) fulfilment first wrote, and nothing for ended
// orders, and nothing else (no notification); the new stream's time is remembered after, so
// the next look announces nothing. A first look with no time remembered announces nothing: it
// is not a loss. Two copies announcing at once leave one copy of each event in the stream.
func TestOpenOrdersAreAnnouncedAgainToAnEventsStreamMadeAnew(t *testing.T) {
	e := newEnv(t, envOptions{noLoops: true, config: withSenders("email")})
	e.addStore("s1", 47.6, -122.3, 10*time.Minute, 30*time.Minute)
	e.setStock("s1", "LATTE", 100)

	confirmed := e.mustPlace(checkout("alice", "k1", "s1", line{"LATTE", 1}), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	preparing := e.mustPlace(checkout("alice", "k2", "s1", line{"LATTE", 2}), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	if _, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: preparing.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.orders.CheckIn(e.asCustomer("alice"), &fulfilmentv1.CheckInRequest{OrderId: preparing.GetId(), Bay: "bay 3"}); err != nil {
		t.Fatal(err)
	}
	cancelled := e.mustPlace(checkout("alice", "k3", "s1", line{"LATTE", 1}), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	if _, err := e.orders.CancelOrder(e.asCustomer("alice"), &fulfilmentv1.CancelOrderRequest{OrderId: cancelled.GetId()}); err != nil {
		t.Fatal(err)
	}
	e.waitEvents(confirmed.GetId(), "confirmed")
	e.waitEvents(preparing.GetId(), "confirmed", "preparing", "checked_in")
	e.waitEvents(cancelled.GetId(), "confirmed", "cancelled")

	// The first look (the first start with this version: orders exist, no time remembered)
	// announces nothing, and remembers the stream; so does the next.
	for range 2 {
		if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != 0 {
			t.Fatalf("look at the stream its events went to: %d announced again (%v), want 0", n, err)
		}
	}
	if got, want := remembered(t, e), streamCreated(t, e); !got.Equal(want) {
		t.Fatalf("remembered stream creation %s, want %s", got, want)
	}
	notes := notifications(t, e)
	if notes == 0 {
		t.Fatal("no notifications written for the orders: the check below would prove nothing")
	}

	renewStream(t, e)
	if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != 2 {
		t.Fatalf("look at a stream made anew: %d announced again (%v), want the 2 open orders", n, err)
	}
	if got, want := remembered(t, e), streamCreated(t, e); !got.Equal(want) {
		t.Fatalf("remembered stream creation %s after the re-announcement, want the new stream's %s", got, want)
	}
	e.waitEvents(confirmed.GetId(), "confirmed", "confirmed")
	e.waitEvents(preparing.GetId(), "confirmed", "preparing", "checked_in", "checked_in")
	e.waitEvents(cancelled.GetId(), "confirmed", "cancelled")
	for _, id := range []string{confirmed.GetId(), preparing.GetId()} {
		evs := e.events.all(id)
		first, again := evs[len(evs)-2], evs[len(evs)-1]
		if again.msgID != first.msgID || !proto.Equal(again.ev, first.ev) {
			t.Errorf("order %s announced again as %s %v, want the same event as first, %s %v", id, again.msgID, again.ev, first.msgID, first.ev)
		}
	}
	if got := notifications(t, e); got != notes {
		t.Errorf("%d notifications after the re-announcement, want the %d before", got, notes)
	}
	if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != 0 {
		t.Fatalf("look again at the stream announced to: %d announced again (%v), want 0", n, err)
	}
	if got, want := rememberedSeq(t, e), streamLastSeq(t, e); got != want || got == 0 {
		t.Fatalf("remembered last sequence %d, want the stream's %d", got, want)
	}

	// A stream restored from a backup keeps its creation time and goes back to the snapshot's
	// last sequence: here, the sequence remembered is ahead of the stream's. (The events
	// announced again are the ones just published, so JetStream's duplicate window drops them
	// here; a restored stream's window is the snapshot's.)
	if _, err := e.pool.Exec(e.ctx, `UPDATE event_streams SET last_seq = last_seq + 1000`); err != nil {
		t.Fatal(err)
	}
	if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != 2 {
		t.Fatalf("look at a stream gone back 1,000 events: %d announced again (%v), want the 2 open orders", n, err)
	}
	if got, want := rememberedSeq(t, e), streamLastSeq(t, e); got != want {
		t.Fatalf("remembered last sequence %d after the re-announcement, want the stream's %d", got, want)
	}
	waitOutboxEmpty(t, e) // relayed (and dropped as duplicates) before the stream goes below
	if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != 0 {
		t.Fatalf("look again at the stream gone back: %d announced again (%v), want 0", n, err)
	}

	// Another copy remembers a newer stream while this one announces to the one it read: this
	// one's remembering must not put the older stream back (else a later loss of the newer one
	// could go unseen, or be announced for twice).
	renewStream(t, e)
	newer := streamCreated(t, e).Add(time.Hour)
	fulfilment.OnReannounced(e.svc, func() {
		if _, err := e.pool.Exec(e.ctx, `UPDATE event_streams SET created = $1, last_seq = 0`, newer); err != nil {
			t.Error(err)
		}
	})
	if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != 2 {
		t.Fatalf("look at a stream made anew: %d announced again (%v), want the 2 open orders", n, err)
	}
	fulfilment.OnReannounced(e.svc, nil)
	if got := remembered(t, e); !got.Equal(newer) {
		t.Fatalf("remembered stream creation %s, want the newer stream %s another copy remembered meanwhile", got, newer)
	}
	waitOutboxEmpty(t, e)

	// Two copies at once: both may announce, the stream keeps one of each event.
	other, err := fulfilment.New(fulfilment.Config{Pool: e.pool, NATS: testenv.NATSConn(t, e.ns), PickupCodeSecret: testSecret, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	renewStream(t, e)
	var wg sync.WaitGroup
	for _, s := range []*fulfilment.Service{e.svc, other} {
		wg.Go(func() {
			if _, err := s.CheckEventsStream(e.ctx); err != nil {
				t.Errorf("look at a stream made anew: %v", err)
			}
		})
	}
	wg.Wait()
	waitOutboxEmpty(t, e)
	st, err := e.js.Stream(e.ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != 2 {
		t.Errorf("stream made anew holds %d events after two copies announced, want the 2 open orders' one each", got)
	}
	if got, want := remembered(t, e), streamCreated(t, e); !got.Equal(want) {
		t.Fatalf("remembered stream creation %s after two copies, want %s", got, want)
	}
}

// renewStream deletes the events stream and declares it again, as an operator's reset would
// and the stack's stream watch then does.
func renewStream(t *testing.T, e *env) {
	t.Helper()
	if err := e.js.DeleteStream(e.ctx, streams.EventsStream); err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(e.ctx, e.js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
}

func streamCreated(t *testing.T, e *env) time.Time {
	t.Helper()
	st, err := e.js.Stream(e.ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Created.Truncate(time.Microsecond)
}

func remembered(t *testing.T, e *env) time.Time {
	t.Helper()
	var at time.Time
	if err := e.pool.QueryRow(e.ctx, `SELECT created FROM event_streams WHERE stream = $1`, streams.EventsStream).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at
}

// waitOutboxEmpty waits until the relay has published every event in fulfilment's outbox.
func waitOutboxEmpty(t *testing.T, e *env) {
	t.Helper()
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil || n > 0 {
			return errNotYet
		}
		return nil
	})
}

func rememberedSeq(t *testing.T, e *env) uint64 {
	t.Helper()
	var seq uint64
	if err := e.pool.QueryRow(e.ctx, `SELECT last_seq FROM event_streams WHERE stream = $1`, streams.EventsStream).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

func streamLastSeq(t *testing.T, e *env) uint64 {
	t.Helper()
	st, err := e.js.Stream(e.ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

func notifications(t *testing.T, e *env) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM notifications`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A re-announcement pages through the open orders of every store, however many batches they
// take, and announces each once: here one order a batch, over two stores.
func TestAReannouncementPagesThroughEveryStoresOpenOrders(t *testing.T) {
	defer fulfilment.SetReannounceBatch(1)()
	e := newEnv(t, envOptions{noLoops: true})
	e.addStore("s1", 47.6, -122.3, 10*time.Minute, 30*time.Minute)
	e.addStore("s2", 47.7, -122.3, 10*time.Minute, 30*time.Minute)
	e.setStock("s1", "LATTE", 100)
	e.setStock("s2", "LATTE", 100)
	var ids []string
	for i, store := range []string{"s1", "s2", "s1"} {
		o := e.mustPlace(checkout("alice", fmt.Sprintf("k%d", i), store, line{"LATTE", 1}), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
		ids = append(ids, o.GetId())
	}
	for _, id := range ids {
		e.waitEvents(id, "confirmed")
	}
	if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != 0 {
		t.Fatalf("first look: %d announced again (%v), want 0", n, err)
	}
	renewStream(t, e)
	if n, err := e.svc.CheckEventsStream(e.ctx); err != nil || n != len(ids) {
		t.Fatalf("look at a stream made anew, one order a batch: %d announced again (%v), want the %d open orders", n, err, len(ids))
	}
	for _, id := range ids {
		e.waitEvents(id, "confirmed", "confirmed")
	}
}
