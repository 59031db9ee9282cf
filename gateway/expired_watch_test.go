package gateway_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/auth"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
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
	addr := g.addr
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	var wmu sync.Mutex
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}) // reads nothing
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", addr},
		{":path", fulfilmentv1connect.OrderServiceWatchOrderProcedure}, {"content-type", "application/grpc"}, {"te", "trailers"},
		{"authorization", "Bearer " + tok}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	msg, _ := proto.Marshal(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
	_ = fr.WriteData(1, true, append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))), msg...))

	var mu sync.Mutex
	var data int
	var end string
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := hpack.NewDecoder(4096, nil)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					wmu.Lock()
					_ = fr.WriteSettingsAck()
					wmu.Unlock()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					wmu.Lock()
					_ = fr.WritePing(true, f.Data)
					wmu.Unlock()
				}
			case *http2.DataFrame:
				mu.Lock()
				data += len(f.Data())
				mu.Unlock()
			case *http2.HeadersFrame:
				fields, _ := dec.DecodeFull(f.HeaderBlockFragment())
				if f.StreamEnded() {
					mu.Lock()
					for _, h := range fields {
						end += h.Name + "=" + h.Value + " "
					}
					mu.Unlock()
					return
				}
			case *http2.RSTStreamFrame:
				mu.Lock()
				end = "RST_STREAM " + f.ErrCode.String()
				mu.Unlock()
				return
			}
		}
	}()
	// The token expires; a second later (well within the 5 s grace) the client reads again.
	time.Sleep(time.Until(expires) + time.Second)
	mu.Lock()
	if data != 0 {
		t.Fatalf("%d bytes arrived before the client gave any window", data)
	}
	mu.Unlock()
	wmu.Lock()
	_ = fr.WriteWindowUpdate(1, 8<<20)
	_ = fr.WriteWindowUpdate(0, 8<<20)
	wmu.Unlock()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the stream did not end")
	}
	mu.Lock()
	defer mu.Unlock()
	msgs := float64(data) / float64(size)
	if data > size+size/2 {
		t.Errorf("a watch whose token expired at %v sent ~%.1f updates after it (%d bytes; ended: %s): want at most the one it was stuck sending", expires.Format(time.TimeOnly), msgs, data, end)
	}
}
