package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stacktest"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

// textCall posts body to procedure at addr as the official gRPC-Web JavaScript client does in
// its default mode: application/grpc-web-text, the frames in base64.
func textCall(t *testing.T, addr, procedure, token string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+procedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc-web-text")
	req.Header.Set("Accept", "application/grpc-web-text")
	req.Header.Set("X-Grpc-Web", "1")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/grpc-web-text+proto" {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 200))
		t.Fatalf("%s in gRPC-web text mode: HTTP %d, Content-Type %q, body %q; want a text-mode answer", procedure, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	return res
}

// textFrames reads a text-mode response as the official client does: 4 characters of base64 at
// a time as they come (padding may end any group), and hands on each frame, data or trailer,
// until each says stop or the body ends.
func textFrames(body io.Reader, each func(flags byte, payload []byte) bool) error {
	in := bufio.NewReader(body)
	var bin []byte
	quad := make([]byte, 4)
	for {
		if _, err := io.ReadFull(in, quad); err != nil {
			if err != io.EOF {
				return fmt.Errorf("reading the text body: %w (%d bytes undecoded)", err, len(bin))
			}
			return nil
		}
		dec, err := base64.StdEncoding.DecodeString(string(quad))
		if err != nil {
			return fmt.Errorf("%q in the body is not base64: %w", quad, err)
		}
		bin = append(bin, dec...)
		for len(bin) >= 5 && len(bin) >= 5+int(binary.BigEndian.Uint32(bin[1:5])) {
			n := int(binary.BigEndian.Uint32(bin[1:5]))
			if !each(bin[0], bin[5:5+n]) {
				return nil
			}
			bin = bin[5+n:]
		}
	}
}

// The gRPC-web text mode, the official JavaScript client's default, is served as the binary
// mode is: a unary call answers its message and its trailer in base64; a server stream's
// messages arrive as they are sent, the stream still open; a body that is not base64 gets a
// clean InvalidArgument. The gateway answered it with a bare HTTP 415 before.
func TestTheGRPCWebTextModeIsServed(t *testing.T) {
	ready := stacktest.Start(t)
	msg, err := proto.Marshal(&catalogv1.ListProductsRequest{Query: "latte", PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	res := textCall(t, ready.GatewayAddr, catalogv1connect.CatalogServiceListProductsProcedure, "", []byte(base64.StdEncoding.EncodeToString(frame(0, msg))))
	var products, status string
	err = textFrames(res.Body, func(flags byte, payload []byte) bool {
		if flags&0x80 != 0 {
			status = strings.ReplaceAll(string(payload), " ", "")
			return true
		}
		var got catalogv1.ListProductsResponse
		if err := proto.Unmarshal(payload, &got); err != nil {
			t.Errorf("the reply is not a ListProductsResponse: %v", err)
		}
		for _, p := range got.GetProducts() {
			products += p.GetName() + "; "
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToLower(products), "latte") || !strings.Contains(status, "grpc-status:0") {
		t.Errorf("ListProducts in text mode: products %q, trailer %q; want lattes and grpc-status 0", products, status)
	}

	// A client that encodes its body in pieces, each padded: the same answer.
	f := frame(0, msg)
	pieces := base64.StdEncoding.EncodeToString(f[:4]) + base64.StdEncoding.EncodeToString(f[4:])
	if !strings.Contains(pieces[:8], "=") {
		t.Fatalf("the pieces %q are not padded between them; the case proves nothing", pieces)
	}
	res = textCall(t, ready.GatewayAddr, catalogv1connect.CatalogServiceListProductsProcedure, "", []byte(pieces))
	status = ""
	if err := textFrames(res.Body, func(flags byte, payload []byte) bool {
		if flags&0x80 != 0 {
			status = strings.ReplaceAll(string(payload), " ", "")
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "grpc-status:0") {
		t.Errorf("ListProducts with a body in padded pieces: trailer %q; want grpc-status 0", status)
	}

	bad := textCall(t, ready.GatewayAddr, catalogv1connect.CatalogServiceListProductsProcedure, "", []byte("AAAA*not base64*"))
	var trailer string
	if err := textFrames(bad.Body, func(flags byte, payload []byte) bool {
		if flags&0x80 != 0 {
			trailer = strings.ReplaceAll(string(payload), " ", "")
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if st := bad.Header.Get("Grpc-Status"); !strings.Contains(trailer, "grpc-status:3") && st != "3" {
		t.Errorf("a body that is not base64: trailer %q, grpc-status header %q; want InvalidArgument (3)", trailer, st)
	}
}

// A WatchOrder stream in text mode delivers the order while the stream stays open.
func TestATextModeWatchDeliversEachMessageAsItIsSent(t *testing.T) {
	g := gatewayTo(t, orderBackend(t, watchForever{}), time.Second)
	tok, err := g.keys.Issue(auth.Principal{Subject: "frank", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := proto.Marshal(&fulfilmentv1.WatchOrderRequest{OrderId: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	res := textCall(t, g.addr, fulfilmentv1connect.OrderServiceWatchOrderProcedure, tok, []byte(base64.StdEncoding.EncodeToString(frame(0, msg))))
	got := make(chan string, 1)
	go func() {
		err := textFrames(res.Body, func(flags byte, payload []byte) bool {
			var w fulfilmentv1.WatchOrderResponse
			if flags&0x80 == 0 && proto.Unmarshal(payload, &w) == nil {
				got <- w.GetOrder().GetId()
			}
			return false
		})
		if err != nil {
			got <- err.Error()
		}
	}()
	select {
	case id := <-got:
		if id != "o-1" {
			t.Fatalf("the watch sent order %q, want o-1", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message of the open stream within 10s: the text mode held it back")
	}
}
