package posadapter_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// An upgrade that builds the tickets index (00004) does not hold up raising tickets while it
// builds: the build waits for a transaction already writing tickets, and meanwhile other
// tickets are written. A plain CREATE INDEX would queue every ticket behind it.
func TestBuildingTheTicketsIndexLetsTicketsBeRaised(t *testing.T) {
	schema := testenv.UniqueSchema(t, "posidx")
	pool := testenv.Pool(t, schema, testenv.MigrationsUpTo(t, posadapter.Migrations(), "00003"))
	ctx := t.Context()
	insert := `INSERT INTO tickets (store_id, seq, ticket_id, kind, order_id, payload, create_time)
		VALUES ('s1', $1::bigint, gen_random_uuid(), 'new_order', 'ord-' || $1::bigint, '\x00', now())`
	// A ticket is being raised in a transaction that has not committed yet.
	writer, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = writer.Rollback(context.Background()) }()
	if _, err := writer.Exec(ctx, insert, 1); err != nil {
		t.Fatal(err)
	}
	// The new build migrates; its index build has to wait for that transaction.
	migrated := make(chan error, 1)
	go func() {
		migrated <- pgdb.Migrate(ctx, pool, schema, posadapter.Migrations(), testenv.Logger(t))
	}()
	time.Sleep(300 * time.Millisecond)
	for seq := 2; seq < 6; seq++ {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := pool.Exec(wctx, insert, seq)
		cancel()
		if err != nil {
			t.Fatalf("ticket %d raised while the index was being built: %v", seq, err)
		}
	}
	if err := writer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-migrated; err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var valid bool
	if err := pool.QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'tickets_final_by_order' AND n.nspname = $1`, schema).Scan(&valid); err != nil || !valid {
		t.Fatalf("the index after the migration: valid %v, %v", valid, err)
	}
}

// A concurrent index build waits for every older transaction in the database, whatever it
// reads (here a report on another schema), holding up no one: it waits as long as that takes,
// not failing try after try on the migrations' lock timeout and then the start. Once the
// report ends, the index is built.
func TestTheIndexBuildsWaitForAnUnrelatedReport(t *testing.T) {
	schema := testenv.UniqueSchema(t, "poscic")
	pool := testenv.Pool(t, schema, testenv.MigrationsUpTo(t, posadapter.Migrations(), "00003"))
	ctx := t.Context()
	report, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = report.Rollback(context.Background()) }()
	if _, err := report.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := report.QueryRow(ctx, `SELECT count(*) FROM pg_class`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LockedBuffer
	migrated := make(chan error, 1)
	go func() {
		migrated <- pgdb.Migrate(ctx, pool, schema, posadapter.Migrations(), slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	time.Sleep(2*time.Second + 500*time.Millisecond) // past pgdb.MigrationLockTimeout
	select {
	case err := <-migrated:
		t.Fatalf("the migration ended while an older transaction was open: %v", err)
	default:
	}
	if err := report.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-migrated; err != nil {
		t.Fatalf("migrate: %v\n%s", err, logs.String())
	}
	if strings.Contains(logs.String(), "waited too long") {
		t.Fatalf("the index build gave up waiting and tried again:\n%s", logs.String())
	}
}
