package gateway_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

// rawWatch is WatchOrder over raw HTTP/2 with a stream window of 0: a client that reads
// nothing (no byte of the response body can be sent) until it opens its window. It answers
// pings and settings, counts the body bytes that arrive, and notes how the stream ended
// (trailers or RST_STREAM) before closing ended.
type rawWatch struct {
	fr    *http2.Framer
	wmu   sync.Mutex // writes to fr
	ended chan struct{}

	mu   sync.Mutex
	data int
	end  string
}

func openRawWatch(t *testing.T, addr, token string) *rawWatch {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	w := &rawWatch{fr: http2.NewFramer(c, c), ended: make(chan struct{})}
	if err := w.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", addr},
		{":path", fulfilmentv1connect.OrderServiceWatchOrderProcedure}, {"content-type", "application/grpc"}, {"te", "trailers"},
		{"authorization", "Bearer " + token}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	msg, _ := proto.Marshal(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
	if err := w.fr.WriteData(1, true, append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))), msg...)); err != nil {
		t.Fatal(err)
	}
	go w.read()
	return w
}

func (w *rawWatch) read() {
	defer close(w.ended)
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				w.wmu.Lock()
				_ = w.fr.WriteSettingsAck()
				w.wmu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				w.wmu.Lock()
				_ = w.fr.WritePing(true, f.Data)
				w.wmu.Unlock()
			}
		case *http2.DataFrame:
			w.mu.Lock()
			w.data += len(f.Data())
			w.mu.Unlock()
		case *http2.HeadersFrame:
			fields, _ := dec.DecodeFull(f.HeaderBlockFragment())
			if f.StreamEnded() {
				w.mu.Lock()
				w.end = "trailers"
				for _, h := range fields {
					w.end += " " + h.Name + "=" + h.Value
				}
				w.mu.Unlock()
				return
			}
		case *http2.RSTStreamFrame:
			w.mu.Lock()
			w.end = "RST_STREAM " + f.ErrCode.String()
			w.mu.Unlock()
			return
		}
		// A GOAWAY is not an end of stream 1 (at or below its last stream id) in itself.
	}
}

// received is how many body bytes have arrived, and how the stream ended ("" not yet).
func (w *rawWatch) received() (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.data, w.end
}

// openWindow lets the server send: the client reads again.
func (w *rawWatch) openWindow() {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_ = w.fr.WriteWindowUpdate(1, 8<<20)
	_ = w.fr.WriteWindowUpdate(0, 8<<20)
}

// A WatchOrder stream ends when its token expires, also when its client reads
// nothing; it must not keep the customer's stream allowance (or a goroutine) after.
func TestAWatchThatReadsNothingStillEndsWhenItsTokenExpires(t *testing.T) {
	limits := gateway.DefaultRateLimits()
	limits.OpenStreams = 1
	g := gatewayTo(t, orderBackend(t, watchForever{}), time.Second, func(c *gateway.Config) { c.RateLimits = limits })
	short, err := g.keys.Issue(auth.Principal{Subject: "erin", Role: auth.RoleCustomer}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w := openRawWatch(t, g.addr, short)
	select {
	case <-w.ended:
	case <-time.After(12 * time.Second):
		t.Errorf("a watch whose client reads nothing was still open 10 s after its token expired")
	}
	// The same customer, with a fresh token, watches again.
	fresh, err := g.keys.Issue(auth.Principal{Subject: "erin", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, "http://"+g.addr, connect.WithGRPCWeb())
	// The client may see its stream cut a moment before the gateway's handler has unwound from
	// the write it was stuck in and given the allowance back: a few seconds are allowed for
	// that, not the token's life or the write's grace.
	for deadline := time.Now().Add(3 * time.Second); ; {
		req := connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
		req.Header().Set("Authorization", "Bearer "+fresh)
		stream, err := orders.WatchOrder(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		received := stream.Receive()
		_ = stream.Close()
		if received {
			return
		}
		if connect.CodeOf(stream.Err()) != connect.CodeResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("a fresh token's watch after the expired one: %v (the expired, unread stream still holds the customer's stream allowance)", stream.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// On shutdown every stream ends at once as Unavailable, also one whose client reads
// nothing; the drain does not wait out its grace for it.
func TestAShutdownEndsAWatchThatReadsNothing(t *testing.T) {
	const grace = 20 * time.Second
	g := gatewayTo(t, orderBackend(t, watchForever{}), grace)
	tok, err := g.keys.Issue(auth.Principal{Subject: "fred", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w := openRawWatch(t, g.addr, tok)
	time.Sleep(time.Second)
	began := time.Now()
	g.stop()
	select {
	case <-w.ended:
	case <-time.After(grace / 2):
		t.Errorf("a stream whose client reads nothing was still open %v into the shutdown", grace/2)
	}
	<-g.served
	if took := time.Since(began); took > grace/2 {
		t.Fatalf("shutdown took %v with a stalled stream open", took)
	}
}
