package fulfilment_test

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// A shopper watching an order that is still PENDING (inventory slow) sees it confirmed, with
// its pickup code, as soon as the recovery loop confirms it: from the change itself, not the
// periodic re-read.
func TestWatchOrderOnAPendingOrderSeesItsConfirmation(t *testing.T) {
	e := newEnv(t, envOptions{noInventory: true, config: func(c *fulfilment.Config) { c.WatchPoll = time.Hour }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.mustPlace(checkout("alice", "k1", "s1", line{"LATTE-16", 1}), pending)
	stream, err := e.orders.WatchOrder(e.asCustomer("alice"), &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	first := watchNext(t, stream)
	if first.GetOrder().GetState() != pending {
		t.Fatalf("first message %s, want PENDING", first.GetOrder().GetState())
	}
	e.startInventory()
	m := watchNext(t, stream)
	checkWatchMessage(t, m, e.codeOf("alice", o.GetId()))
	if m.GetOrder().GetState() != confirmed {
		t.Fatalf("after recovery: %s, want CONFIRMED", m.GetOrder().GetState())
	}
}

// The watching process's NATS connection drops and comes back while another copy changes the
// order: that change's event was published while this process was not subscribed, so it never
// arrives. The process knows it missed events (it reconnected) and must look again at once, as
// its store cache does, rather than leave the shopper on the old state until the periodic
// re-read (WatchPoll, 15 s by default; an hour here, so that only the live path counts).
func TestWatchOrderCatchesUpAfterANATSReconnect(t *testing.T) {
	var watcherConn *nats.Conn
	dialer := &gatedDialer{}
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) {
		c.WatchPoll = time.Hour
		nc, err := nats.Connect(c.NATS.ConnectedUrl(), nats.SetCustomDialer(dialer), nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		c.NATS, watcherConn = nc, nc
	}})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	other := e.secondCopy(func(c *fulfilment.Config) { c.WatchPoll = time.Hour })
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	stream, err := e.orders.WatchOrder(e.asCustomer("alice"), &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	checkWatchMessage(t, watchNext(t, stream), o.GetPickupCode())

	cid, err := watcherConn.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	dialer.closed.Store(true) // no reconnect until the other copy's change is published
	if err := e.ns.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if watcherConn.IsConnected() {
			return errNotYet
		}
		return nil
	})
	if _, err := other.Accept(e.ctx, "s1", barista, o.GetId()); err != nil {
		t.Fatal(err)
	}
	e.waitEvents(o.GetId(), "confirmed", "preparing")
	dialer.closed.Store(false)
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !watcherConn.IsConnected() {
			return errNotYet
		}
		return nil
	})
	reconnected := time.Now()
	type result struct {
		m   *fulfilmentv1.WatchOrderResponse
		err error
	}
	got := make(chan result, 1)
	go func() { m, err := stream.Recv(); got <- result{m, err} }()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.m.GetOrder().GetState() != preparing {
			t.Fatalf("after the reconnect: %s, want PREPARING", r.m.GetOrder().GetState())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the order was accepted by the other copy while this one was disconnected from NATS; %s after reconnecting the shopper still sees CONFIRMED",
			time.Since(reconnected).Round(time.Second))
	}
}

// gatedDialer dials NATS unless closed: a connection dropped while it is closed stays down
// until it opens.
type gatedDialer struct {
	closed atomic.Bool
	d      net.Dialer
}

func (g *gatedDialer) Dial(network, address string) (net.Conn, error) {
	if g.closed.Load() {
		return nil, errors.New("gated: no connection now")
	}
	return g.d.Dial(network, address)
}
