package edge

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// grpcWebCall posts one gRPC-web message to path on addr over HTTP/1.1.
func grpcWebCall(t *testing.T, ctx context.Context, addr, path string, msg proto.Message) *http.Response {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(append(frame, b...)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	res, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	t.Cleanup(func() { _ = res.Body.Close() })
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d", path, res.StatusCode)
	}
	return res
}

// A unary reply leaves whole, with its length (one write, not a flushed chunk and then the
// trailers); a stream still gets each message as it is sent.
func TestUnaryRepliesAreWrittenOnceAndStreamsStillFlush(t *testing.T) {
	mux := http.NewServeMux()
	health := Mount(mux, []string{"handoff.test.v1.Nothing"})
	health.SetServing(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ServeHTTP(ctx, lis, mux, time.Second, slog.New(slog.DiscardHandler), nil) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := lis.Addr().String()

	res := grpcWebCall(t, t.Context(), addr, "/grpc.health.v1.Health/Check", &healthpb.HealthCheckRequest{})
	if res.ContentLength <= 0 || len(res.TransferEncoding) > 0 {
		t.Errorf("unary reply: Content-Length %d, Transfer-Encoding %v; want a length, not chunks", res.ContentLength, res.TransferEncoding)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte("grpc-status: 0")) {
		t.Errorf("unary reply %q has no grpc-status 0 trailer", body)
	}

	// The health Watch stream sends the status at once and then stays open: its first message
	// must arrive while the stream lives.
	wctx, wcancel := context.WithCancel(t.Context())
	defer wcancel()
	res = grpcWebCall(t, wctx, addr, "/grpc.health.v1.Health/Watch", &healthpb.HealthCheckRequest{})
	got := make(chan error, 1)
	go func() {
		var head [5]byte
		_, err := io.ReadFull(res.Body, head[:])
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("reading the stream's first message: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream's first message did not arrive while the stream was open: it was not flushed")
	}
}

func TestProceduresAreKnownByTheirKind(t *testing.T) {
	for path, want := range map[string]procedureKind{
		"/grpc.health.v1.Health/Check":                              unaryProcedure,
		"/grpc.health.v1.Health/Watch":                              serverStreamProcedure,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": clientStreamProcedure, // bidi
		"/grpc.health.v1.Health/Nope":                               otherPath,
		"/no.such.v1.Service/Check":                                 otherPath,
		"/grpc.health.v1.Health":                                    otherPath,
		"/webhooks/pos/store-1":                                     otherPath,
		"/grpc.health.v1.Health/Check/trailing":                     otherPath,
	} {
		var kinds procedureKinds
		if got := kinds.of(path); got != want {
			t.Errorf("of(%q) = %v, want %v", path, got, want)
		}
	}
}

// Paths that name no method are not remembered: callers inventing paths cannot grow the cache.
func TestOnlyMethodsThatExistAreRemembered(t *testing.T) {
	var kinds procedureKinds
	for i := range 1000 {
		kinds.of(fmt.Sprintf("/no.such.v1.Service/Method%d", i))
		kinds.of(fmt.Sprintf("/grpc.health.v1.Health/Nope%d", i))
	}
	kinds.of("/grpc.health.v1.Health/Check")
	kinds.of("/grpc.health.v1.Health/Watch")
	n := 0
	kinds.known.Range(func(any, any) bool { n++; return true })
	if n != 2 {
		t.Errorf("%d paths remembered, want 2 (the two methods that exist)", n)
	}
}
