package posadapter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// A terminal revoked through a copy whose TerminalRevoked event never
// arrives (it died before relaying it: the row changed, no event) still has its open stream
// on the other copy closed, by that copy's periodic check, within a few CatchUpIntervals.
func TestRevocationWithoutItsEventClosesAStreamOnAnotherCopy(t *testing.T) {
	e := newEnv(t)
	there := e.startCopy()
	id, cred := e.register("Stolen tablet", "rev-lost")
	other := posv1connect.NewTerminalServiceClient(e.http1, there, connect.WithGRPCWeb(), connect.WithInterceptors(bearer(cred)))
	f := e.openFeed(other, "rev-lost")
	e.publish("confirmed", order("rev-lost", 1), nil)
	f.take(1, 5*time.Second)

	start := time.Now()
	if _, err := e.pool.Exec(context.Background(), `UPDATE terminals SET revoke_time = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := f.end(3 * time.Second); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("stream on the other copy after a revocation without its event: %v; want Unauthenticated", err)
	}
	t.Logf("closed %v after the revocation", time.Since(start))
	if _, err := other.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: "rev-lost", TicketId: "0190a8f0-0000-7000-8000-000000000000"})); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("call on the other copy: %v; want Unauthenticated", err)
	}
}

// A store's own escalation timers swept by two adapter copies at once
// raise exactly one escalation per order, and the store's feed stays gap-free (one sequence
// number per ticket, none spent twice).
func TestTwoCopiesSweepingEscalationsRaiseEachOnce(t *testing.T) {
	const store, orders = "esc-two", 40
	e, fulfilment := boardEnv(t, store, time.Second)
	e.startCopy()
	e.startCopy()
	for i := range orders {
		o := order(store, i)
		fulfilment.wait(store, o.GetId())
		e.publish("confirmed", o, &fulfilmentv1.Transition{ToState: o.GetState(), Time: timestamppb.Now()})
	}
	ctx := context.Background()
	testenv.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE kind = 'escalation' AND store_id = $1`, store).Scan(&n); err != nil {
			return err
		}
		if n != orders {
			return fmt.Errorf("%d escalations", n)
		}
		return nil
	})
	time.Sleep(time.Second) // further sweeps by every copy
	var tickets, distinctOrders, distinctSeq, maxSeq, lastSeq int64
	if err := e.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT order_id), (SELECT count(DISTINCT seq) FROM tickets WHERE store_id = $1),
		(SELECT max(seq) FROM tickets WHERE store_id = $1), (SELECT last_seq FROM store_feeds WHERE store_id = $1)
		FROM tickets WHERE kind = 'escalation' AND store_id = $1`, store).Scan(&tickets, &distinctOrders, &distinctSeq, &maxSeq, &lastSeq); err != nil {
		t.Fatal(err)
	}
	if tickets != orders || distinctOrders != orders || distinctSeq != 2*orders || maxSeq != 2*orders || lastSeq != 2*orders {
		t.Fatalf("escalations %d for %d orders; feed: %d distinct seqs, max %d, last_seq %d; want %d, %d, %d, %d, %d",
			tickets, distinctOrders, distinctSeq, maxSeq, lastSeq, orders, orders, 2*orders, 2*orders, 2*orders)
	}
}
