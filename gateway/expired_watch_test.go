package gateway_test

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/auth"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// watchMany sends n big updates at once, then waits for its caller to go.
type watchMany struct {
	fulfilmentv1.UnimplementedOrderServiceServer
	n, size int
}

func (w watchMany) WatchOrder(req *fulfilmentv1.WatchOrderRequest, stream grpc.ServerStreamingServer[fulfilmentv1.WatchOrderResponse]) error {
	noise := make([]byte, w.size/2)
	_, _ = rand.Read(noise)
	for i := range w.n {
		if err := stream.Send(&fulfilmentv1.WatchOrderResponse{Order: &fulfilmentv1.Order{Id: req.GetOrderId(), StoreName: hex.EncodeToString(noise), CustomerId: string(rune('a' + i%26))}}); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// README (Tokens): "an expired or ended stream sends nothing more meanwhile" (during the
// grace before its writes are cut). A watch whose client stopped reading before its token
// expired, and reads again within the grace, must get at most the one update the gateway was
// stuck sending, not the updates buffered behind it.
func TestAnExpiredWatchSendsNothingMoreMeanwhile(t *testing.T) {
	const size = 20 << 10
	g := gatewayTo(t, orderBackend(t, watchMany{n: 50, size: size}), time.Second)
	tok, err := g.keys.Issue(auth.Principal{Subject: "gina", Role: auth.RoleCustomer}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(3 * time.Second)
	w := openRawWatch(t, g.addr, tok)
	// The token expires; a second later (well within the 5 s grace) the client reads again.
	time.Sleep(time.Until(expires) + time.Second)
	if data, _ := w.received(); data != 0 {
		t.Fatalf("%d bytes arrived before the client gave any window", data)
	}
	w.openWindow()
	select {
	case <-w.ended:
	case <-time.After(15 * time.Second):
		t.Fatal("the stream did not end")
	}
	data, end := w.received()
	if data > size+size/2 {
		t.Errorf("a watch whose token expired at %v sent ~%.1f updates after it (%d bytes; ended: %s): want at most the one it was stuck sending",
			expires.Format(time.TimeOnly), float64(data)/float64(size), data, end)
	}
}
