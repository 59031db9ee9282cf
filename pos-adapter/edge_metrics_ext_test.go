package posadapter_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/testenv"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// posAnswers reads handoff_edge_requests_total{edge="pos"} of procedure, by code.
func posAnswers(t *testing.T, procedure string) map[string]float64 {
	t.Helper()
	return testenv.CounterSums(t, "handoff_edge_requests_total", map[string]string{"edge": "pos", "procedure": procedure}, "code")
}

// wantAnswered checks that procedure's answers grew by n, all under code, since before.
func wantAnswered(t *testing.T, procedure, code string, n float64, before map[string]float64) {
	t.Helper()
	after := posAnswers(t, procedure)
	var grew float64
	for c, v := range after {
		grew += v - before[c]
	}
	if after[code]-before[code] != n || grew != n {
		t.Errorf("%s: counted %v, before %v; want %v more under code %q and nothing else", procedure, after, before, n, code)
	}
}

// An operator sees on /metrics what terminals and admins get at the adapter's door: answers,
// refusals for no credential and for too many refused credentials from one address (which
// fulfilment never sees), and calls failing Unavailable with fulfilment down, each once.
func TestMetricsCountEveryAnswerAtTheDoorOnce(t *testing.T) {
	e := newEnv(t) // fulfilment is a dead connection: forwarded calls fail Unavailable
	accept := posv1connect.TerminalServiceAcceptOrderProcedure
	if got := posAnswers(t, accept); len(got) < 2 {
		t.Fatalf("AcceptOrder's series before any call: %v; want unavailable and internal there at 0", got)
	}

	before := posAnswers(t, posv1connect.TerminalAdminServiceListTerminalsProcedure)
	if _, err := e.admin().ListTerminals(context.Background(), connect.NewRequest(&posv1.ListTerminalsRequest{})); err != nil {
		t.Fatal(err)
	}
	wantAnswered(t, posv1connect.TerminalAdminServiceListTerminalsProcedure, "ok", 1, before)

	for _, p := range protocols {
		before = posAnswers(t, accept)
		_, err := e.terminal(p, "").AcceptOrder(context.Background(), connect.NewRequest(&posv1.AcceptOrderRequest{StoreId: "mx-1", OrderId: "ord-1"}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("%s: AcceptOrder without a credential: %v; want Unauthenticated", p.name, err)
		}
		wantAnswered(t, accept, "unauthenticated", 1, before)
	}

	_, cred := e.register("Counter", "mx-1")
	for _, p := range protocols {
		before = posAnswers(t, accept)
		_, err := e.terminal(p, cred).AcceptOrder(context.Background(), connect.NewRequest(&posv1.AcceptOrderRequest{StoreId: "mx-1", OrderId: "ord-1"}))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("%s: AcceptOrder with fulfilment down: %v; want Unavailable", p.name, err)
		}
		wantAnswered(t, accept, "unavailable", 1, before)
	}

	// Made-up credentials from one address: refused, then refused unread once over its limit.
	tickets := posv1connect.TerminalServiceAckTicketProcedure
	before = posAnswers(t, tickets)
	bad := e.terminal(overGRPC, "hot_trmnosuchterminal_"+"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	refused := 0
	for ; refused < 200; refused++ {
		_, err := bad.AckTicket(context.Background(), connect.NewRequest(&posv1.AckTicketRequest{StoreId: "mx-1", TicketId: "t"}))
		if connect.CodeOf(err) == connect.CodeResourceExhausted {
			break
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("a made-up credential: %v; want Unauthenticated, then ResourceExhausted", err)
		}
	}
	if refused == 200 {
		t.Fatal("200 made-up credentials from one address, none refused for the address's limit")
	}
	after := posAnswers(t, tickets)
	if after["unauthenticated"]-before["unauthenticated"] != float64(refused) || after["resource_exhausted"]-before["resource_exhausted"] != 1 {
		t.Errorf("AckTicket: counted %v, before %v; want %d more unauthenticated and 1 resource_exhausted", after, before, refused)
	}
}
