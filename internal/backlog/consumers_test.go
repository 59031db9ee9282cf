package backlog_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// A durable consumer's events not yet handed over, handed and not acknowledged, and handed
// again after a failure are reported as they stand in JetStream; a consumer without a durable
// name (a live feed's) is left out.
func TestConsumersReportWhatTheyHaveLeft(t *testing.T) {
	ctx := t.Context()
	js, err := jetstream.New(testenv.NATSConn(t, testenv.NATS(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, streams.EventsStream, jetstream.ConsumerConfig{
		Durable: "kitchen", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, streams.EventsStream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := js.Publish(ctx, streams.EventSubject("catalog", "product", "created"), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	if _, err := backlog.Register(reg, backlog.NewConsumers(js, []string{streams.EventsStream, streams.TicketsStream}, nil)); err != nil {
		t.Fatal(err)
	}
	check := func(what string, pending, unacked, redelivered, floor int) {
		t.Helper()
		want := `
# HELP handoff_jetstream_consumer_ack_floor_sequence The stream sequence below which a durable consumer has acknowledged every event. It stops while one event stays unacknowledged, however many after it are handled.
# TYPE handoff_jetstream_consumer_ack_floor_sequence gauge
handoff_jetstream_consumer_ack_floor_sequence{consumer="kitchen",stream="HANDOFF_EVENTS"} ` + strconv.Itoa(floor) + `
# HELP handoff_jetstream_consumer_pending_events Events in the stream a durable consumer has not been handed yet. Near zero while its service keeps up.
# TYPE handoff_jetstream_consumer_pending_events gauge
handoff_jetstream_consumer_pending_events{consumer="kitchen",stream="HANDOFF_EVENTS"} ` + strconv.Itoa(pending) + `
# HELP handoff_jetstream_consumer_redelivered_events Events handed to a durable consumer more than once and still not acknowledged: handlers failing on them.
# TYPE handoff_jetstream_consumer_redelivered_events gauge
handoff_jetstream_consumer_redelivered_events{consumer="kitchen",stream="HANDOFF_EVENTS"} ` + strconv.Itoa(redelivered) + `
# HELP handoff_jetstream_consumer_unacknowledged_events Events handed to a durable consumer and not yet acknowledged (being handled, or waiting to be handed again after a failure).
# TYPE handoff_jetstream_consumer_unacknowledged_events gauge
handoff_jetstream_consumer_unacknowledged_events{consumer="kitchen",stream="HANDOFF_EVENTS"} ` + strconv.Itoa(unacked) + `
`
		// The server counts a consumer's pending events as they arrive, in its own goroutine: a
		// loaded machine has read 1 pending of 4 events just published and acknowledged.
		testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "handoff_jetstream_consumer_pending_events", "handoff_jetstream_consumer_ack_floor_sequence",
				"handoff_jetstream_consumer_unacknowledged_events", "handoff_jetstream_consumer_redelivered_events"); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		})
	}
	check("4 events, none handed over", 4, 0, 0, 0)

	fetch := func(n int) []jetstream.Msg {
		t.Helper()
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != n {
			t.Fatalf("fetched %d messages, want %d", len(msgs), n)
		}
		return msgs
	}
	msgs := fetch(2)
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	check("2 handed over, the first acknowledged", 2, 1, 0, 1)

	// The other one's handler fails: no ack within AckWait, and JetStream hands it over again
	// before any new event.
	time.Sleep(600 * time.Millisecond)
	if meta, err := fetch(1)[0].Metadata(); err != nil || meta.NumDelivered != 2 {
		t.Fatalf("the next event handed over: %+v, %v; want the unacknowledged one, a second time", meta, err)
	}
	check("the failed one handed again, not yet acknowledged", 2, 1, 1, 1)

	for _, m := range fetch(2) {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check("the events after it handled: the floor stays below the failing one", 0, 1, 1, 1)
}
