package inbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// A consumer declared by an earlier build with one filter (FilterSubject) is declared again,
// after the NATS server restarted on its store, by a build that reads several
// (FilterSubjects): the consumer starts and reads the new filters. The server answers the
// first update of a consumer it recovered from its store with the configuration it recovered
// (the consumer's initial info), so nats.go took the update for one the server could not make:
// pos-adapter-order-events went from one filter to several in 7750efb, and the one-process
// system on a data dir of a build before it stopped at its first start with "nats: multiple
// consumer filter subjects not supported by nats-server".
func TestAConsumerDeclaredWithOneFilterTakesSeveralAfterARestartedServer(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	if _, err := pool.Exec(t.Context(), `CREATE TABLE effects (event_id text NOT NULL, value text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	onStore := func(o *server.Options) { o.StoreDir = store }
	cfg := config(t, "filters-upgrade")
	cfg.FilterSubjects = []string{"handoff.fulfilment.order.>"}

	// The earlier build.
	first := testenv.NATS(t, onStore)
	js := newJS(t, first)
	if err := streams.Ensure(t.Context(), js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	old := make(chan error, 1)
	go func() { old <- inbox.Run(ctx, pool, js, cfg, recordEffect) }()
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		_, err := js.Consumer(t.Context(), cfg.Stream, cfg.Durable)
		return err
	})
	cancel()
	<-old
	first.Shutdown()
	first.WaitForShutdown()

	// The server back on its store; the new build.
	second := testenv.NATS(t, onStore)
	js = newJS(t, second)
	cfg.FilterSubjects = []string{"handoff.fulfilment.order.cancelled", "handoff.fulfilment.order.confirmed"}
	rctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- inbox.Run(rctx, pool, js, cfg, recordEffect) }()
	publish(t, js, orderConfirmed, "ev-1", "one")
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("the new build's consumer stopped: %v", err)
		default:
		}
		if rows, _ := effects(t, pool); rows != 1 {
			return errors.New("the event is not handled yet")
		}
		return nil
	})
	cons, err := js.Consumer(t.Context(), cfg.Stream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.FilterSubjects; len(got) != 2 {
		t.Errorf("the consumer's filters after the upgrade: %v; want the two new ones", got)
	}
}
