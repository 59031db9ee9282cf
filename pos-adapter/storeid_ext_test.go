package posadapter_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/auth"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// A store id no store can have is refused naming store_id, as the admin API refuses it,
// wherever staff name a store: a token minted for a misspelt store must not open a ticket feed
// that stays empty for good, shown on the device as connected.
func TestAStoreIDNoStoreCanHaveIsRefusedNamingTheField(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("x", 5000)
	for _, bad := range []string{"Not A Store!", "-sea-ballard-01"} {
		for who, tok := range map[string]string{
			"admin token": e.token(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}),
			"staff token": e.token(auth.Principal{Subject: "till-9", Role: auth.RoleStaff, Stores: []string{bad, long}}),
		} {
			c := e.terminal(overGRPC, tok)
			f := e.openFeed(c, bad)
			if err := f.end(10 * time.Second); codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "store_id") {
				t.Errorf("%s: StreamTickets(%q): %v; want InvalidArgument naming store_id", who, bad, err)
			}
			_, err := c.AcceptOrder(context.Background(), req(&posv1.AcceptOrderRequest{StoreId: bad, OrderId: "o-1"}))
			if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "store_id") {
				t.Errorf("%s: AcceptOrder at %q: %v; want InvalidArgument naming store_id", who, bad, err)
			}
			_, err = c.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: long, TicketId: "t-1"}))
			if codeOf(err) != connect.CodeInvalidArgument || len(err.Error()) > 400 {
				t.Errorf("%s: AckTicket at a 5,000-character store id: %d characters, %.200v; want InvalidArgument, the id cut short", who, len(err.Error()), err)
			}
		}
	}
}
