package posadapter_test

import (
	cryptorand "crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// raiseBigTickets raises 100 tickets of about 100 KB for store: more than a client that reads
// nothing can have in flight, so the stream gets stuck in a send.
func raiseBigTickets(t *testing.T, e *env, a *posadapter.Adapter, store string) {
	t.Helper()
	noise := make([]byte, 50<<10)
	_, _ = cryptorand.Read(noise)
	big := hex.EncodeToString(noise) // ~100 KB a ticket, incompressible
	var ts []*posv1.Ticket
	for range 100 {
		ts = append(ts, &posv1.Ticket{TicketId: uuid.NewString(), StoreId: store, Kind: posv1.TicketKind_TICKET_KIND_NEW_ORDER,
			OrderId: "ord-" + uuid.NewString(), Message: big, CreateTime: timestamppb.Now()})
	}
	tx, err := e.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RaiseTickets(t.Context(), tx, ts...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A staff token's stream must end when the token expires; a client that reads
// nothing must not keep it (and the tickets it would still get) open past its expiry.
func TestAStaffStreamStuckInASendEndsWhenItsTokenExpires(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.StreamEndGrace = 300 * time.Millisecond }))
	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	for i, p := range []protocol{overGRPC, overGRPCWeb} {
		store := fmt.Sprintf("stuckexp-%d", i)
		raiseBigTickets(t, e, a, store)
		tok, err := e.keys.Issue(auth.Principal{Subject: "barista-x", Role: auth.RoleStaff, Stores: []string{store}}, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		closeStream := stuckStream(t, e, p, store, tok)
		// The client reads no more; its token expires in 3 s.
		testenv.CheckFor(t, 15*time.Second, 100*time.Millisecond, func() error {
			if n := a.OpenStreams(); n != 0 {
				return fmt.Errorf("%v: %d streams still open while the client reads nothing, after its staff token expired", p.name, n)
			}
			return nil
		})
		closeStream()
	}
}

// Once a staff token has expired, its stream sends no more tickets (they carry
// shoppers' names and notes): a slow reader must not be fed the rest of its backlog.
func TestASlowStaffStreamGetsNoTicketsAfterItsTokenExpired(t *testing.T) {
	e := newEnv(t)
	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	const store = "slowexp-1"
	raiseBigTickets(t, e, a, store)
	const ttl = 3 * time.Second
	tok, err := e.keys.Issue(auth.Principal{Subject: "barista-y", Role: auth.RoleStaff, Stores: []string{store}}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(ttl)
	client := posv1connect.NewTerminalServiceClient(slowReader(t, true), e.base, connect.WithGRPC(), connect.WithInterceptors(bearer(tok)))
	stream, err := client.StreamTickets(t.Context(), connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no first ticket: %v", stream.Err())
	}
	time.Sleep(time.Until(expires) + 2*time.Second)
	n := 1
	for stream.Receive() {
		n++
	}
	if n > 30 {
		t.Fatalf("a staff stream whose token expired at %v went on sending: %d of 100 tickets received in all (the client stopped reading before the expiry); ended with %v",
			expires.Format(time.TimeOnly), n, stream.Err())
	}
}

// On shutdown every stream ends at once (UNAVAILABLE), also one stuck in a send to
// a client that reads nothing: the drain must not wait out its whole grace for it.
func TestAShutdownEndsAStreamStuckInASend(t *testing.T) {
	e := newEnv(t, func(e *env) { e.grace = 20 * time.Second })
	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	const store = "stuckdrain-1"
	_, cred := e.register("Set-aside tablet", store)
	raiseBigTickets(t, e, a, store)
	client := posv1connect.NewTerminalServiceClient(slowReader(t, true), e.base, connect.WithGRPC(), connect.WithInterceptors(bearer(cred)))
	stream, err := client.StreamTickets(t.Context(), connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no first ticket: %v", stream.Err())
	}
	time.Sleep(time.Second)
	began := time.Now()
	e.stopAdapter()
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("shutdown took %v with one stream stuck in a send (grace 20 s); want the stream ended, not waited for", took)
	}
}
