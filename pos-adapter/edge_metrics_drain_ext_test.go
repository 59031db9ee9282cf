package posadapter_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// A pos-adapter copy restarting ends every terminal's open StreamTickets as Unavailable, by
// design (the terminal reconnects, to the other copy): each is counted once, but not as
// unavailable, which HandoffEdgeFailing reads as a service behind the edge failing; with a
// store's tills streaming, a rolling restart of the two copies would page on every deploy.
func TestARestartOfTheAdapterIsNotCountedAsAFailureOfTheFeedsItEnds(t *testing.T) {
	e := newEnv(t)
	procedure := posv1connect.TerminalServiceStreamTicketsProcedure
	before := posAnswers(t, procedure)
	var feeds []*feed
	for _, p := range protocols {
		_, cred := e.register("Till "+p.name, "drain-1")
		feeds = append(feeds, e.openFeed(e.terminal(p, cred), "drain-1"))
	}
	e.publish("confirmed", order("drain-1", 1), nil)
	for _, f := range feeds {
		f.take(1, 10*time.Second) // open and served
	}
	e.stopAdapter()
	for _, f := range feeds {
		if err := f.end(10 * time.Second); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("a feed ended on the adapter's restart with %v; want Unavailable", err)
		}
	}
	wantAnswered(t, procedure, "ok", float64(len(feeds)), before)
}
