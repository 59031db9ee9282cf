package pgcluster_test

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/pgcluster"
)

// A cluster asked for a fixed port (handoff -postgres-port) where another PostgreSQL that trusts
// local connections already listens (the machine's own on 5432, say) must fail to start, saying
// the port is taken. Before, its postgres could not bind and exited, but the wait for readiness
// connected over TCP to 127.0.0.1:port and took the other server's answer for its own: Start
// returned a "running" cluster whose URL named the other server, and Handoff created its
// database, schemas and demo chain there.
func TestStartOnAPortHeldByAnotherPostgresFailsSayingSo(t *testing.T) {
	requireBinaries(t)
	other := start(t, pgcluster.Options{DataDir: t.TempDir(), Ephemeral: true, Logger: testLogger(t)})
	u, err := url.Parse(other.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}

	own := t.TempDir()
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{DataDir: own, Port: port, Ephemeral: true, Logger: testLogger(t)})
	if err == nil {
		defer c.Stop(context.Background())
		dataDir := "(not reachable)"
		if conn, err := pgx.Connect(t.Context(), c.URL("postgres")); err == nil {
			_ = conn.QueryRow(t.Context(), "SHOW data_directory").Scan(&dataDir)
			_ = conn.Close(context.Background())
		}
		t.Fatalf("Start on port %d, held by another PostgreSQL, succeeded; its URL reaches data_directory %s, not %s/pgdata", port, dataDir, own)
	}
	t.Logf("refused: %v", err)
	if !errors.Is(err, pgcluster.ErrPortInUse) {
		t.Errorf("Start on a port held by another PostgreSQL: %v; want it to wrap ErrPortInUse", err)
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	for _, want := range []string{"127.0.0.1:" + u.Port(), "another program holds", "could not bind", "already in use"} {
		if !strings.Contains(first, want) {
			t.Errorf("Start on a port held by another PostgreSQL: first line %q; want it to say %q", first, want)
		}
	}
}

// A server that exits while starting is reported by the line of its output that says why, in
// the error's first line, not only somewhere in the twenty lines of log after it.
func TestAServerExitingAtStartIsReportedByItsReason(t *testing.T) {
	requireBinaries(t)
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{DataDir: t.TempDir(), Port: 1, Ephemeral: true, Logger: testLogger(t)})
	if err == nil {
		_ = c.Stop(context.Background())
		t.Skip("port 1 could be bound here (a privileged server account?)")
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	if !strings.Contains(first, "could not bind") {
		t.Fatalf("postgres refused port 1: first line %q; want the server's reason (could not bind)", first)
	}
}
