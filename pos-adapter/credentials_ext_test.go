package posadapter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// ackUnknown acknowledges a ticket that does not exist: NotFound means the credential passed.
func ackUnknown(c posv1connect.TerminalServiceClient, store string) connect.Code {
	_, err := c.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: store, TicketId: "0190a8f0-0000-7000-8000-000000000000"}))
	return codeOf(err)
}

func TestTerminalCredentialIsCheckedFromMemoryForItsTTLOnly(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.CredentialCacheTTL = 500 * time.Millisecond }))
	id, cred := e.register("Counter", "cache-1")
	c := e.terminal(overGRPC, cred)
	if code := ackUnknown(c, "cache-1"); code != connect.CodeNotFound {
		t.Fatalf("first call: %v; want NotFound (credential accepted)", code)
	}
	// The row changes behind the adapter's back (no revocation it could hear of): calls go on
	// being checked against what it read, for the TTL.
	start := time.Now()
	if _, err := e.pool.Exec(context.Background(), `UPDATE terminals SET credential_hash = '\x00' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if code := ackUnknown(c, "cache-1"); code != connect.CodeNotFound {
		t.Fatalf("call right after: %v; want NotFound (checked from memory)", code)
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if code := ackUnknown(c, "cache-1"); code != connect.CodeUnauthenticated {
			return fmt.Errorf("call %s after the change: %v", time.Since(start), code)
		}
		return nil
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the changed row was read again only %s later; want within about the 500ms TTL", took)
	}
}

func TestRevokedTerminalIsRefusedAtOnceHereAndPromptlyInAnotherCopy(t *testing.T) {
	// A TTL far beyond the test: only the revocation itself can end what the copies remember.
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.CredentialCacheTTL = time.Hour }))
	there := e.startCopy()
	id, cred := e.register("Stolen tablet", "cache-2")
	here := e.terminal(overGRPC, cred)
	other := posv1connect.NewTerminalServiceClient(e.http1, there, connect.WithGRPCWeb(), connect.WithInterceptors(bearer(cred)))
	for range 3 {
		if a, b := ackUnknown(here, "cache-2"), ackUnknown(other, "cache-2"); a != connect.CodeNotFound || b != connect.CodeNotFound {
			t.Fatalf("before revocation: %v here, %v in the other copy; want NotFound", a, b)
		}
	}
	start := time.Now()
	if _, err := e.admin().RevokeTerminal(context.Background(), req(&posv1.RevokeTerminalRequest{TerminalId: id})); err != nil {
		t.Fatal(err)
	}
	if code := ackUnknown(here, "cache-2"); code != connect.CodeUnauthenticated {
		t.Fatalf("right after revocation, in the copy that revoked: %v; want Unauthenticated", code)
	}
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if code := ackUnknown(other, "cache-2"); code != connect.CodeUnauthenticated {
			return fmt.Errorf("other copy %s after revocation: %v", time.Since(start), code)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("the other copy refused the revoked credential %s after the revocation", took)
	if took > 2*time.Second {
		t.Fatalf("the other copy refused it only after %s; want promptly (its TerminalRevoked event)", took)
	}
}

func TestRevocationWhoseEventIsLostTakesEffectWithinTheTTL(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.CredentialCacheTTL = 300 * time.Millisecond }))
	id, cred := e.register("Counter", "cache-3")
	c := e.terminal(overGRPC, cred)
	if code := ackUnknown(c, "cache-3"); code != connect.CodeNotFound {
		t.Fatalf("before: %v", code)
	}
	// Revoked in the database without the event (a copy that died before relaying it).
	start := time.Now()
	if _, err := e.pool.Exec(context.Background(), `UPDATE terminals SET revoke_time = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if code := ackUnknown(c, "cache-3"); code != connect.CodeUnauthenticated {
			return fmt.Errorf("%s after: %v", time.Since(start), code)
		}
		return nil
	})
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("refused only after %s; want within about the 300ms TTL", took)
	}
}

// A ticket stream opened with a credential this copy still holds as good, revoked meanwhile
// where this copy has not heard of it yet (another copy's revocation, its event still on the
// way), ends at once: the stream's own first look at the terminal's row sees the revocation.
// Before, it streamed until the feed's next periodic check.
func TestAStreamOpenedJustAfterARevocationEndsAtOnce(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		c.CredentialCacheTTL = time.Hour // only the revocation itself can end what the copy remembers
		c.CatchUpInterval = time.Hour    // nor does the feed's periodic check come in time
	}))
	const store = "late-revoke-1"
	id, cred := e.register("Stolen tablet", store)
	here := e.terminal(overGRPC, cred)
	if code := ackUnknown(here, store); code != connect.CodeNotFound {
		t.Fatalf("before revocation: %v; want NotFound", code)
	}
	// Revoked as another copy does it, without this copy's cache or hub knowing yet.
	if _, err := e.pool.Exec(t.Context(), `UPDATE terminals SET revoke_time = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	f := e.openFeed(here, store)
	select {
	case err := <-f.done:
		if codeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("the stream of a revoked terminal ended with %v; want Unauthenticated", err)
		}
	case tk := <-f.tickets:
		t.Fatalf("the stream of a revoked terminal sent %v", tk)
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a terminal revoked before it opened is still open after 10 s")
	}
}
