package streams_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestEnsureTwiceAndConcurrentlyDeclaresTheTopology(t *testing.T) {
	s := testenv.NATS(t)
	ctx := t.Context()

	// Two processes starting together, then a restart.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		js, err := jetstream.New(testenv.NATSConn(t, s))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { errs[i] = streams.Ensure(ctx, js, streams.Config{Logger: testenv.Logger(t)}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Ensure: %v", err)
	}
	js, _ := jetstream.New(testenv.NATSConn(t, s))
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}

	for _, want := range streams.Topology(streams.Config{}) {
		st, err := js.Stream(ctx, want.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", want.Name, err)
		}
		got := st.CachedInfo().Config
		if got.Storage != jetstream.FileStorage || got.Duplicates != 2*time.Minute || got.MaxAge != 7*24*time.Hour || got.Replicas != 1 {
			t.Errorf("%s: storage %v, duplicates %v, max age %v, replicas %d; want file, 2m, 168h, 1",
				want.Name, got.Storage, got.Duplicates, got.MaxAge, got.Replicas)
		}
	}
}

func TestSubjectHelpersLandInTheirStream(t *testing.T) {
	s := testenv.NATS(t)
	js, _ := jetstream.New(testenv.NATSConn(t, s))
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	for subject, want := range map[string]string{
		streams.EventSubject("fulfilment", "order", "confirmed"): streams.EventsStream,
		streams.EventSubject("inventory", "hold", "released"):    streams.EventsStream,
		streams.EventSubject("pos", "terminal", "registered"):    streams.EventsStream,
		streams.TicketSubject("store-42", "new"):                 streams.TicketsStream,
	} {
		ack, err := js.Publish(ctx, subject, []byte("x"))
		if err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
		if ack.Stream != want || streams.Capturing(subject) != want {
			t.Errorf("%s stored in %q (Capturing says %q), want %s", subject, ack.Stream, streams.Capturing(subject), want)
		}
	}
}

func TestRPCSubjectsAreNeverCapturedByAStream(t *testing.T) {
	s := testenv.NATS(t)
	nc := testenv.NATSConn(t, s)
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	rpc := natsrpc.Subject("catalog", "get_skus")

	if name, err := js.StreamNameBySubject(ctx, rpc); err == nil {
		t.Fatalf("stream %s captures %s", name, rpc)
	}
	if got := streams.Capturing(rpc); got != "" {
		t.Fatalf("Capturing(%s) = %s", rpc, got)
	}
	for _, sc := range streams.Topology(streams.Config{}) {
		for _, subj := range sc.Subjects {
			if streams.SubjectsOverlap(subj, natsrpc.SubjectPrefix+".>") {
				t.Errorf("stream %s subject %s overlaps %s.>", sc.Name, subj, natsrpc.SubjectPrefix)
			}
		}
	}

	// What capture would break: a request must get its responder's answer,
	// not a stream's publish acknowledgement.
	sub, err := nc.Subscribe(rpc, func(m *nats.Msg) { _ = m.Respond([]byte("price list")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	reqCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := nc.RequestWithContext(reqCtx, rpc, []byte("skus"))
	if err != nil || string(reply.Data) != "price list" {
		t.Fatalf("request on %s = %v, %v; want the responder's answer", rpc, reply, err)
	}
}

func TestSubjectsOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"handoff.rpc.>", "handoff.rpc.catalog.get_skus", true},
		{"handoff.catalog.>", "handoff.rpc.>", false},
		{"handoff.*.>", "handoff.rpc.>", true},
		{"handoff.>", "handoff.rpc.x", true},
		{"handoff.store.*.ticket.>", "handoff.store.42.ticket.new", true},
		{"handoff.store.*.ticket.>", "handoff.store.42.ticket", false},
		{"handoff.store.*.ticket.>", "handoff.rpc.>", false},
		{"a.b", "a.b.c", false},
		{"a.*", "a.b", true},
	} {
		if got := streams.SubjectsOverlap(tc.a, tc.b); got != tc.want {
			t.Errorf("SubjectsOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := streams.SubjectsOverlap(tc.b, tc.a); got != tc.want {
			t.Errorf("SubjectsOverlap(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

// A process started against a cluster without its replica setting (a one-off run by hand, a
// variable forgotten) must not turn the cluster's R3 streams into R1: Ensure's update lowered
// them to the 1 it declared by default.
func TestMergeNeverLowersReplicas(t *testing.T) {
	for _, want := range streams.Topology(streams.Config{Replicas: 1}) {
		have := want
		have.Replicas = 3
		merged, kept := streams.Merge(have, want)
		if merged.Replicas != 3 {
			t.Errorf("%s at R3, declared R1: merged to R%d; want R3 kept", want.Name, merged.Replicas)
		}
		if kept == "" {
			t.Errorf("%s: replicas kept, but nothing said so", want.Name)
		}
		up, _ := streams.Merge(want, have) // declared higher: scaled up
		if up.Replicas != 3 {
			t.Errorf("%s at R1, declared R3: merged to R%d; want R3", want.Name, up.Replicas)
		}
	}
}

// An operator's limits on a stream (here MaxBytes and MaxMsgSize, as a capacity plan sets them)
// survive every process's start; what Handoff's delivery rests on is set again. Before, each
// start's update put the declared configuration back whole, removing the limits.
func TestEnsureKeepsTheOperatorsLimits(t *testing.T) {
	s := testenv.NATS(t)
	ctx := t.Context()
	js, err := jetstream.New(testenv.NATSConn(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxBytes, cfg.MaxMsgSize = 1<<30, 1<<20
	cfg.Duplicates = time.Minute // Handoff's own: set back
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, streams.Config{Logger: testenv.Logger(t)}); err != nil {
		t.Fatal(err)
	}
	st, err = js.Stream(ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	got := st.CachedInfo().Config
	if got.MaxBytes != 1<<30 || got.MaxMsgSize != 1<<20 {
		t.Errorf("after a start: max bytes %d, max message size %d; want the operator's %d and %d kept", got.MaxBytes, got.MaxMsgSize, 1<<30, 1<<20)
	}
	if got.Duplicates != streams.DuplicateWindow || !got.AllowAtomicPublish {
		t.Errorf("after a start: duplicate window %v, atomic publish %v; want Handoff's %v and true", got.Duplicates, got.AllowAtomicPublish, streams.DuplicateWindow)
	}
}
