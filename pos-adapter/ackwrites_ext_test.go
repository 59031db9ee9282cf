package posadapter_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// ackStatements counts the statements that record acknowledgements.
type ackStatements struct{ n atomic.Int64 }

func (c *ackStatements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.Contains(data.SQL, "INSERT INTO ticket_acks") {
		c.n.Add(1)
	}
	return ctx
}

func (c *ackStatements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Concurrent acks are recorded together, each on its own check: every ticket of the store is
// acknowledged once, an ack repeated in the same moment (or spelt another way) is fine, and an
// ack naming another store's ticket is NotFound and records nothing, all in fewer statements
// than acks.
func TestConcurrentAcksAreRecordedTogetherEachOnItsOwnCheck(t *testing.T) {
	counted := &ackStatements{}
	e := newEnv(t, withConfig(func(cfg *posadapter.Config) {
		pc := cfg.Pool.Config()
		pc.ConnConfig.Tracer = counted
		pool, err := pgxpool.NewWithConfig(context.Background(), pc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		cfg.Pool = pool
	}))
	_, cred := e.register("Counter", "acks-1", "acks-2")
	term := e.terminal(overGRPCWeb, cred)
	const n = 24
	for i := range n {
		e.publish("confirmed", order("acks-1", i), nil)
	}
	e.publish("confirmed", order("acks-2", 0), nil)
	f := e.openFeed(term, "acks-1")
	tickets := dedupe(f.take(n, 10*time.Second))
	f.close()
	f = e.openFeed(term, "acks-2")
	other := f.take(1, 10*time.Second)[0]
	f.close()

	type call struct{ store, ticket string }
	calls := make([]call, 0, n+2)
	for _, tk := range tickets {
		calls = append(calls, call{"acks-1", tk.GetTicketId()})
	}
	calls = append(calls,
		call{"acks-1", tickets[0].GetTicketId()},                                // the same ack twice at once
		call{"acks-1", "urn:uuid:" + strings.ToUpper(tickets[1].GetTicketId())}, // another spelling of a ticket id
		call{"acks-1", other.GetTicketId()},                                     // acks-2's ticket, named as acks-1's
	)
	before := counted.n.Load()
	start := make(chan struct{})
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() {
			<-start
			_, errs[i] = term.AckTicket(context.Background(), connect.NewRequest(&posv1.AckTicketRequest{StoreId: c.store, TicketId: c.ticket}))
		})
	}
	close(start)
	wg.Wait()

	for i, err := range errs[:n+2] {
		if err != nil {
			t.Errorf("ack %d of a ticket of the store: %v", i, err)
		}
	}
	if err := errs[n+2]; codeOf(err) != connect.CodeNotFound {
		t.Errorf("ack of another store's ticket: %v; want NotFound", err)
	}
	var acked, wrong int
	if err := e.pool.QueryRow(context.Background(), `
		SELECT count(*) FILTER (WHERE store_id = 'acks-1'), count(*) FILTER (WHERE ticket_id = $1)
		FROM ticket_acks`, other.GetTicketId()).Scan(&acked, &wrong); err != nil {
		t.Fatal(err)
	}
	if acked != n || wrong != 0 {
		t.Errorf("ticket_acks: %d of store acks-1 (want %d), %d of the other store's ticket (want 0)", acked, n, wrong)
	}
	if got := counted.n.Load() - before; got >= int64(len(calls)) {
		t.Errorf("%d concurrent acks took %d statements, want fewer", len(calls), got)
	} else {
		t.Logf("%d concurrent acks recorded in %d statements", len(calls), got)
	}
}

// An ack the database refuses (a trigger, standing in for any failure of one row) fails alone:
// its batch is written again ack by ack, and the terminal's other acks are recorded.
func TestAnAckTheDatabaseRefusesFailsAloneAndTheOthersAreRecorded(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "acks-3")
	term := e.terminal(overGRPCWeb, cred)
	const n = 16
	for i := range n {
		e.publish("confirmed", order("acks-3", i), nil)
	}
	f := e.openFeed(term, "acks-3")
	tickets := dedupe(f.take(n, 10*time.Second))
	f.close()
	refused := tickets[n/2].GetTicketId()
	for _, sql := range []string{
		`CREATE FUNCTION refuse_one_ack() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.ticket_id = '` + refused + `' THEN RAISE EXCEPTION 'this ack may not be recorded'; END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER refuse_one_ack BEFORE INSERT ON ticket_acks FOR EACH ROW EXECUTE FUNCTION refuse_one_ack()`,
	} {
		if _, err := e.pool.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, tk := range tickets {
		wg.Go(func() {
			<-start
			_, errs[i] = term.AckTicket(context.Background(), connect.NewRequest(&posv1.AckTicketRequest{StoreId: "acks-3", TicketId: tk.GetTicketId()}))
		})
	}
	close(start)
	wg.Wait()
	for i, tk := range tickets {
		if tk.GetTicketId() == refused {
			if errs[i] == nil {
				t.Errorf("the refused ack succeeded")
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("ack %d: %v; want it recorded", i, errs[i])
		}
	}
	var acked int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM ticket_acks WHERE store_id = 'acks-3'`).Scan(&acked); err != nil {
		t.Fatal(err)
	}
	if acked != n-1 {
		t.Errorf("%d acks recorded, want %d (all but the refused one)", acked, n-1)
	}
}
