package testenv

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS starts an in-process NATS server with JetStream on a free port of
// 127.0.0.1, storing in a temporary dir; it is shut down when t ends. Each of
// configure, if any, may change the server's options before it starts (a smaller
// max_payload, say).
func NATS(t testing.TB, configure ...func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: "testenv",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		// Registered before the shutdown below, so removed after it.
		StoreDir:           t.TempDir(),
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
		NoLog:              true,
		NoSigs:             true,
	}
	for _, c := range configure {
		c(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("testenv: configure NATS server: %v", err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("testenv: NATS server not ready within 10s")
	}
	return s
}

// NATSConn connects to s; the connection is drained when t ends.
func NATSConn(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	closed := make(chan struct{})
	var once sync.Once
	nc, err := nats.Connect(s.ClientURL(),
		nats.Name(t.Name()),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) }),
	)
	if err != nil {
		t.Fatalf("testenv: connect to NATS: %v", err)
	}
	t.Cleanup(func() {
		// Drain lets in-flight messages finish handlers before closing.
		if err := nc.Drain(); err != nil {
			nc.Close()
			return
		}
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			nc.Close()
		}
	})
	return nc
}
