// Package stacktest starts a whole Handoff system in-process for end-to-end tests: every
// service, the gateway and the pos-adapter on loopback ports, on a fresh database of the test
// Postgres and an in-process NATS server, with the demo chain loaded. Nothing is mocked.
package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// Config is the configuration Start runs: every part on a free loopback port, a fresh database,
// an in-process NATS server of its own and the demo chain.
func Config(t testing.TB) stack.Config {
	t.Helper()
	ns := testenv.NATS(t)
	return stack.Config{
		Target:           stack.TargetAll,
		DataDir:          t.TempDir(),
		DatabaseURL:      testenv.FreshDatabaseURL(t),
		NATSURL:          ns.ClientURL(),
		EmbeddedNATSAddr: "127.0.0.1:0",
		GatewayAddr:      "127.0.0.1:0",
		POSAdapterAddr:   "127.0.0.1:0",
		MetricsAddr:      "127.0.0.1:0",
		CatalogAddr:      "127.0.0.1:0",
		InventoryAddr:    "127.0.0.1:0",
		CartAddr:         "127.0.0.1:0",
		FulfilmentAddr:   "127.0.0.1:0",
		AllowedOrigins:   []string{"*"},
		Currency:         "USD",
		LoadDemo:         true,
		ShutdownGrace:    2 * time.Second,
		Logger:           testenv.Logger(t),
	}
}

// Start runs the system until t ends and returns where its parts listen. edit may change the
// configuration before start (e.g. allowed origins).
func Start(t testing.TB, edit ...func(*stack.Config)) stack.Ready {
	t.Helper()
	cfg := Config(t)
	for _, e := range edit {
		e(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan stack.Ready, 1)
	// done closes when Run has returned runErr: the start's wait and the cleanup's both see it
	// (a channel of the error would give it to the first only, and the cleanup of a failed
	// start waited 30 s for it).
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = stack.Run(ctx, cfg, func(r stack.Ready) { readyc <- r })
	}()
	started := false
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if runErr != nil && started {
				t.Errorf("stack stopped with an error: %v", runErr)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stack did not stop within 30s of cancellation")
		}
	})
	select {
	case r := <-readyc:
		started = true
		return r
	case <-done:
		t.Fatalf("stack failed to start: %v", runErr)
	case <-time.After(2 * time.Minute):
		t.Fatal("stack not ready after 2 minutes")
	}
	return stack.Ready{}
}
