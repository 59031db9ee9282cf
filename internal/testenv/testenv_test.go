package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestDatabaseURLIsOneFreshDatabasePerPackage(t *testing.T) {
	dbURL := testenv.DatabaseURL(t)
	if again := testenv.DatabaseURL(t); again != dbURL {
		t.Fatalf("second call gave another database: %s vs %s", again, dbURL)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if !strings.HasPrefix(name, "handoff_test_testenv_") {
		t.Fatalf("database %q is not named after this package", name)
	}

	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	defer conn.Close(context.Background())
	var current string
	var tables int
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&current); err != nil {
		t.Fatal(err)
	}
	if current != name {
		t.Fatalf("connected to %q, want %q", current, name)
	}
	if err := conn.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("fresh database has %d tables in public", tables)
	}
}

func TestPoolGivesEachTestItsOwnMigratedSchema(t *testing.T) {
	a := testenv.Pool(t, "", nil)
	b := testenv.Pool(t, "", nil)

	var schemaA, schemaB string
	if err := a.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schemaA); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schemaB); err != nil {
		t.Fatal(err)
	}
	if schemaA == "" || schemaA == schemaB {
		t.Fatalf("schemas %q and %q: want two distinct schemas", schemaA, schemaB)
	}
	// The shared tables are there, reachable unqualified.
	if _, err := a.Exec(t.Context(),
		"INSERT INTO outbox (event_id, subject, event_type, payload) VALUES (gen_random_uuid(), 's', 't', '')"); err != nil {
		t.Fatalf("insert into outbox: %v", err)
	}
	var n int
	if err := b.QueryRow(t.Context(), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("schema %s sees %d outbox rows written in %s", schemaB, n, schemaA)
	}
}

func TestUniqueSchemaIsAValidIdentifier(t *testing.T) {
	for _, prefix := range []string{"Inventory", "9lives", "pg_x", "", "cart-v2"} {
		s := testenv.UniqueSchema(t, prefix)
		if s != strings.ToLower(s) || strings.ContainsAny(s, "- ") || s[0] >= '0' && s[0] <= '9' || strings.HasPrefix(s, "pg_") {
			t.Errorf("UniqueSchema(%q) = %q: not a plain identifier", prefix, s)
		}
	}
	if a, b := testenv.UniqueSchema(t, "x"), testenv.UniqueSchema(t, "x"); a == b {
		t.Fatalf("two calls gave the same schema, %s", a)
	}
}

func TestNATSJetStreamStoresAndDelivers(t *testing.T) {
	s := testenv.NATS(t)
	nc := testenv.NATSConn(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "HANDOFF", Subjects: []string{"handoff.>"}})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "handoff.fulfilment.order.confirmed", fmt.Appendf(nil, "order-%d", i)); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 3 {
			return fmt.Errorf("stream holds %d messages, want 3", info.State.Msgs)
		}
		return nil
	})

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	var got []string
	for msg := range batch.Messages() {
		got = append(got, string(msg.Data()))
		if err := msg.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "order-0,order-1,order-2" {
		t.Fatalf("read %v, want order-0..2 in order", got)
	}
}
