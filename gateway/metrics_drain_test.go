package gateway_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

// A gateway copy restarting (a rolling deploy, a node drained) ends every shopper's open
// WatchOrder stream so that the app watches again elsewhere: that is the gateway's own planned
// restart, not "a service behind the edge failing". Counted under unavailable, each restart
// adds one failure per open watch to the share HandoffEdgeFailing pages on (over 5% of all
// calls for 5 minutes): with a few hundred open watches, a rolling restart of the two copies
// pages on every deploy. Each stream is still counted once, but not as unavailable.
func TestTheGatewaysOwnRestartIsNotCountedAsAFailureOfTheStreamsItEnds(t *testing.T) {
	g := gatewayTo(t, orderBackend(t, watchForever{}), 20*time.Second)
	tok, err := g.keys.Issue(auth.Principal{Subject: "dana", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	procedure := fulfilmentv1connect.OrderServiceWatchOrderProcedure
	before := edgeCounts(t, procedure)

	ended := make(chan error, len(protocols))
	for i, p := range protocols {
		orders := fulfilmentv1connect.NewOrderServiceClient(p.client(), "http://"+g.addr, p.opts...)
		req := connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: fmt.Sprintf("o-%d", i)})
		req.Header().Set("Authorization", "Bearer "+tok)
		stream, err := orders.WatchOrder(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !stream.Receive() {
			t.Fatalf("%s: first message: %v", p.name, stream.Err())
		}
		go func() {
			for stream.Receive() {
			}
			ended <- stream.Err()
		}()
	}
	g.stop()
	for range protocols {
		select {
		case err := <-ended:
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("a stream ended on shutdown with %v; want Unavailable (the app watches again)", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a stream still open 10 s into the shutdown")
		}
	}
	<-g.served

	var after map[string]float64
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		after = edgeCounts(t, procedure)
		var grew float64
		for c, v := range after {
			grew += v - before[c]
		}
		if grew != float64(len(protocols)) {
			return fmt.Errorf("WatchOrder counted %v more times, want %d (each stream once)", grew, len(protocols))
		}
		return nil
	})
	if n := after["unavailable"] - before["unavailable"]; n != 0 {
		t.Errorf("the gateway's own restart counted %v of the %d watches it ended as unavailable (a service behind the edge down, HandoffEdgeFailing); counts %v, before %v",
			n, len(protocols), after, before)
	}
}

// A Connect-protocol stream (WatchOrder) that connect refuses before its handler runs, here for
// a Connect-Timeout-Ms that is no number, gets its error in the body's end-of-stream message
// under HTTP 200: the app sees InvalidArgument. The edge counts it from the status it saw
// written, and so as ok, where the gRPC and gRPC-web forms of the same refusal are counted
// invalid_argument.
func TestAConnectStreamRefusedBeforeItsHandlerIsNotCountedOK(t *testing.T) {
	g := gatewayTo(t, orderBackend(t, watchForever{}), time.Second)
	tok, err := g.keys.Issue(auth.Principal{Subject: "erin", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	procedure := fulfilmentv1connect.OrderServiceWatchOrderProcedure
	before := edgeCounts(t, procedure)

	msg, err := proto.Marshal(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+g.addr+procedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+proto")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Connect-Timeout-Ms", "soon")
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Contains(got, []byte(`"invalid_argument"`)) {
		t.Fatalf("WatchOrder with a bad timeout: %d %q; want 200 and an end-of-stream invalid_argument", res.StatusCode, got)
	}
	wantCountedOnce(t, procedure, "invalid_argument", before)
}
