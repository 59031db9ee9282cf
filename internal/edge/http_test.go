package edge

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// serveMounted serves health and reflection (Mount, with opts) on a fresh port.
func serveMounted(t *testing.T, opts ...connect.HandlerOption) (*Health, string) {
	t.Helper()
	health, addr, _, _ := serveMountedWithGrace(t, time.Second, opts...)
	return health, addr
}

// serveMountedWithGrace is serveMounted with a shutdown grace; stop starts the shutdown, and
// served tells how ServeHTTP ended.
func serveMountedWithGrace(t *testing.T, grace time.Duration, opts ...connect.HandlerOption) (health *Health, addr string, stop func(), served <-chan error) {
	t.Helper()
	mux := http.NewServeMux()
	health = Mount(mux, []string{"handoff.test.v1.Nothing"}, opts...)
	addr, stop, served = serveHandler(t, mux, grace, health.Drain)
	return health, addr, stop, served
}

// serveHandler serves h with ServeHTTP on a loopback port until t ends; stop starts the
// shutdown, and served tells how ServeHTTP ended.
func serveHandler(t *testing.T, h http.Handler, grace time.Duration, beforeShutdown func()) (addr string, stop func(), served <-chan error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		done <- ServeHTTP(ctx, lis, h, grace, slog.New(slog.DiscardHandler), beforeShutdown)
	}()
	t.Cleanup(func() { cancel(); <-exited })
	return lis.Addr().String(), cancel, done
}

// envelope is payload in a gRPC envelope with flags: a flag byte, a 4-byte length, then payload.
func envelope(flags byte, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func grpcConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Reflection is open to anyone, so it must keep the size limit like every other handler: a
// request over it is refused, not decoded (a small compressed one could inflate to gigabytes).
func TestReflectionRefusesRequestsOverTheSizeLimit(t *testing.T) {
	_, addr := serveMounted(t, connect.WithReadMaxBytes(64<<10))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(grpcConn(t, addr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		Host:           strings.Repeat("x", 1<<20),
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a 1 MiB reflection request with a 64 KiB limit: %v; want ResourceExhausted", err)
	}
}

// The services' errors carry google.rpc details (BadRequest naming the fields, ErrorInfo,
// RetryInfo), which no served file imports: reflection must describe them all the same, or a
// client that resolves types through it (grpcurl) shows a refusal's details as raw bytes.
func TestReflectionDescribesTheErrorDetails(t *testing.T) {
	_, addr := serveMounted(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(grpcConn(t, addr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, symbol := range []string{"google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.RetryInfo"} {
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}}); err != nil {
			t.Fatal(err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if e := res.GetErrorResponse(); e != nil {
			t.Fatalf("reflection of %s: %s %s; want its file", symbol, codes.Code(e.GetErrorCode()), e.GetErrorMessage())
		}
		files := res.GetFileDescriptorResponse().GetFileDescriptorProto()
		var first descriptorpb.FileDescriptorProto
		if len(files) == 0 || proto.Unmarshal(files[0], &first) != nil || first.GetName() != "google/rpc/error_details.proto" {
			t.Fatalf("reflection of %s: %d files, the first %q; want google/rpc/error_details.proto", symbol, len(files), first.GetName())
		}
	}
}

// Health and reflection carry no token, so they are limited per client address.
func TestHealthAndReflectionAreLimitedPerAddress(t *testing.T) {
	_, addr := serveMounted(t)
	client := healthpb.NewHealthClient(grpcConn(t, addr))
	limited := 0
	for range 3 * openPerAddressBurst {
		_, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{})
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			limited++
		default:
			t.Fatalf("health check: %v", err)
		}
	}
	if limited == 0 {
		t.Fatalf("%d health checks at once from one address were never limited", 3*openPerAddressBurst)
	}
}

// Health's Check is charged to its address as soon as its headers are in, as the services'
// procedures are (AdmitBeforeBody): calls from one address trickling their bodies hold no more
// handlers at once than the address may make calls. Found by review: Check was charged only
// once its body was in, so 400 such calls from one address held 400 handlers, each for up to
// bodyTimeout, however many there were.
func TestTrickledHealthChecksFromOneAddressAreChargedBeforeTheirBodies(t *testing.T) {
	was := bodyTimeout
	t.Cleanup(func() { bodyTimeout = was }) // after the server has stopped
	bodyTimeout = 4 * time.Second
	mux := http.NewServeMux()
	Mount(mux, []string{"handoff.test.v1.Nothing"})

	// Charged once: a burst's worth of calls, made at once, all go through.
	msg, err := proto.Marshal(&healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range openPerAddressBurst {
		req := httptest.NewRequest(http.MethodPost, "/grpc.health.v1.Health/Check", bytes.NewReader(envelope(0, msg)))
		req.RemoteAddr = "192.0.2.7:4000"
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if code, m := webStatus(rec.Header(), rec.Body.Bytes()); code != "0" {
			t.Fatalf("call %d of a burst of %d: grpc-status %s %q; want each charged once", i+1, openPerAddressBurst, code, m)
		}
	}

	var inFlight atomic.Int64
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		mux.ServeHTTP(w, r)
	})
	addr, _, _ := serveHandler(t, counted, time.Second, nil)

	const n = 400
	var senders []*io.PipeWriter
	defer func() { // the calls end, their bodies cut short
		for _, s := range senders {
			_ = s.Close()
		}
	}()
	start := time.Now()
	for range 2 { // two connections, 200 streams each (HTTP/2 allows 250)
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		client := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
		for range n / 2 {
			body, send := io.Pipe()
			senders = append(senders, send)
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/grpc.health.v1.Health/Check", body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			go func() { _, _ = send.Write([]byte{0, 0, 0, 0, 10}) }() // a message begun, then nothing
			go func() {
				if res, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					_ = res.Body.Close()
				}
			}()
		}
	}
	time.Sleep(2 * time.Second)
	held, elapsed := inFlight.Load(), time.Since(start)
	// What the address may have made by now: its burst, and what refilled meanwhile.
	allowed := openPerAddressBurst + int64(openPerAddress*elapsed.Seconds()) + 1
	if held > allowed {
		t.Errorf("%d Health/Check calls from one address trickling their bodies: %d handlers held at once after %v; want at most %d (burst %d, %d a second)",
			n, held, elapsed.Round(time.Millisecond), allowed, openPerAddressBurst, openPerAddress)
	}
}

// On shutdown a Watch stream is told NOT_SERVING and then ends, instead of holding the
// server's drain until its grace runs out.
func TestDrainEndsWatchStreams(t *testing.T) {
	health, addr := serveMounted(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(grpcConn(t, addr)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := watch.Recv(); err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status %v, %v; want SERVING", res, err)
	}
	health.Drain()
	if res, err := watch.Recv(); err != nil || res.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status after Drain %v, %v; want NOT_SERVING", res, err)
	}
	if _, err := watch.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after NOT_SERVING: %v; want the stream to end (EOF)", err)
	}
}

// On shutdown an idle reflection stream (a grpcurl session left open) ends at once, telling its
// client to open it again, instead of holding the drain for the whole grace.
func TestDrainEndsIdleReflectionStreams(t *testing.T) {
	const grace = 10 * time.Minute
	_, addr, stop, served := serveMountedWithGrace(t, grace)
	rctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(grpcConn(t, addr)).ServerReflectionInfo(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("listing services: %v", err)
	}
	stop() // the stream now waits, idle, for a next request that never comes
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("an idle reflection stream on shutdown: %v; want Unavailable (open it again)", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-rctx.Done():
		t.Fatalf("the server was still draining a minute after its reflection stream ended (grace %v)", grace)
	}
}

// A reflection stream over HTTP/2 may idle between requests as long as its client likes, but
// a request begun must arrive within bodyTimeout: one stalled mid-message would otherwise hold
// the stream and its handler for good (pings keep the connection alive).
func TestAStreamStalledMidMessageEndsAndAnIdleOneLivesOn(t *testing.T) {
	was := bodyTimeout
	t.Cleanup(func() { bodyTimeout = was }) // after the server has stopped
	bodyTimeout = 200 * time.Millisecond
	_, addr := serveMounted(t)

	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	body, send := io.Pipe()
	defer send.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	msg, err := proto.Marshal(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	if err != nil {
		t.Fatal(err)
	}
	envelope := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	envelope = append(envelope, msg...)
	sent := make(chan error, 1)
	go func() { _, err := send.Write(envelope); sent <- err }() // the request's headers go with it
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	answer := func() error {
		var prefix [5]byte
		if _, err := io.ReadFull(res.Body, prefix[:]); err != nil {
			return err
		}
		_, err := io.CopyN(io.Discard, res.Body, int64(binary.BigEndian.Uint32(prefix[1:])))
		return err
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := answer(); err != nil {
		t.Fatalf("first answer: %v", err)
	}

	time.Sleep(3 * bodyTimeout) // idle between requests: allowed
	if _, err := send.Write(envelope); err != nil {
		t.Fatal(err)
	}
	if err := answer(); err != nil {
		t.Fatalf("answer after idling %v between requests: %v", 3*bodyTimeout, err)
	}

	if _, err := send.Write(envelope[:3]); err != nil { // a request begun, then nothing
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- answer() }()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("a stalled request got an answer")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a stream stalled mid-message was still open 10 s later (limit %v)", bodyTimeout)
	}
}

// A client sending a request's body slower than bodyTimeout is cut off, whatever the path,
// while a stream whose request arrived lives on past it.
func TestSlowRequestBodiesAreCutOffAndStreamsLiveOn(t *testing.T) {
	was := bodyTimeout
	t.Cleanup(func() { bodyTimeout = was }) // after the server has stopped
	bodyTimeout = 200 * time.Millisecond
	health, addr := serveMounted(t)

	// A procedure, and paths answered without reading the body: unknown ones, and a bidi
	// stream, which HTTP/1.1 cannot carry. The client sends a byte a second, never the rest.
	for _, path := range []string{"/grpc.health.v1.Health/Check", "/nope", "/grpc.health.v1.Health/Nope",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: edge\r\n"+
			"Content-Type: application/grpc-web+proto\r\nContent-Length: 100000\r\n\r\n\x00\x00\x00\x00"); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
					if _, err := conn.Write([]byte{0}); err != nil {
						return
					}
				}
			}
		}()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(conn)
		close(stop)
		_ = conn.Close()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a request to %s trickling its body still held its connection after 5 s", path)
			}
		}
	}

	res := grpcWebCall(t, t.Context(), addr, "/grpc.health.v1.Health/Watch", &healthpb.HealthCheckRequest{})
	readFrame := func() byte {
		t.Helper()
		var head [5]byte
		if _, err := io.ReadFull(res.Body, head[:]); err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if _, err := io.CopyN(io.Discard, res.Body, int64(binary.BigEndian.Uint32(head[1:]))); err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		return head[0]
	}
	readFrame() // SERVING
	time.Sleep(3 * bodyTimeout)
	health.SetServing(false)
	if flags := readFrame(); flags != 0 {
		t.Fatalf("after %v the stream sent frame flags %#x; want its next message", 3*bodyTimeout, flags)
	}
}

// webStatus is the gRPC status of a gRPC-web answer: in its headers (trailers-only) or in its
// trailer frame.
func webStatus(h http.Header, body []byte) (code, msg string) {
	if c := h.Get("Grpc-Status"); c != "" {
		return c, h.Get("Grpc-Message")
	}
	for len(body) >= 5 {
		n := int(binary.BigEndian.Uint32(body[1:5]))
		if 5+n > len(body) {
			break
		}
		if body[0]&0x80 != 0 {
			for _, line := range strings.Split(string(body[5:5+n]), "\r\n") {
				k, v, _ := strings.Cut(line, ":")
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "grpc-status":
					code = strings.TrimSpace(v)
				case "grpc-message":
					msg = strings.TrimSpace(v)
				}
			}
			return code, msg
		}
		body = body[5+n:]
	}
	return "", ""
}

// A request whose body is not in within bodyTimeout is answered DeadlineExceeded, saying so,
// over HTTP/1.1 (a unary call's body) and HTTP/2 (a stream's message). Found by review: over
// HTTP/1.1 the answer carried the read's own error, "read tcp
// 127.0.0.1:45939->127.0.0.1:58384: i/o timeout", naming the server's socket to the client.
func TestALateRequestBodyIsToldSoWithoutTheServersAddress(t *testing.T) {
	was := bodyTimeout
	t.Cleanup(func() { bodyTimeout = was }) // after the server has stopped
	bodyTimeout = 300 * time.Millisecond
	_, addr := serveMounted(t)
	const want = "request body not received within 300ms"

	for _, c := range []struct {
		name string
		sent []byte // then nothing, of the 100 bytes announced
	}{
		{"HTTP/1.1, mid-prefix", []byte{0, 0, 0}},
		{"HTTP/1.1, mid-message", []byte{0, 0, 0, 0, 50, 1, 2, 3}},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req := "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: edge\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: 100\r\n\r\n"
		if _, err := conn.Write(append([]byte(req), c.sent...)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(res.Body)
		if code, msg := webStatus(res.Header, body); code != "4" || msg != want {
			t.Errorf("%s: grpc-status %s %q; want 4 (DeadlineExceeded) %q", c.name, code, msg, want)
		}
	}

	// A reflection stream's message stalled over HTTP/2.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	body, send := io.Pipe()
	defer send.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	go func() { _, _ = send.Write([]byte{0, 0, 0, 0, 50, 1}) }()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	code, msg := res.Trailer.Get("Grpc-Status"), res.Trailer.Get("Grpc-Message")
	if code == "" {
		code, msg = res.Header.Get("Grpc-Status"), res.Header.Get("Grpc-Message")
	}
	if code != "4" || msg != want {
		t.Errorf("HTTP/2, a stream's message stalled: grpc-status %s %q; want 4 (DeadlineExceeded) %q", code, msg, want)
	}
}

// A gRPC or gRPC-web body that breaks the framing is the client's fault: it is refused
// InvalidArgument, in the binary and the text mode, while connect's own answers to the wrong
// number of messages (Unimplemented) stay. Found by review: connect answered a length prefix
// past the body's end, a truncated prefix, an unknown flag (0x40) and a message flagged
// compressed in a call naming no compression Internal, which the edges count as
// handoff_edge_requests_total{code="internal"}: HandoffEdgeFailing paged the on-call, saying a
// service behind the edge was down.
func TestMalformedFramesAreRefusedAsTheClientsFault(t *testing.T) {
	mux := http.NewServeMux()
	Mount(mux, []string{"handoff.test.v1.Nothing"}, connect.WithReadMaxBytes(1024))
	h := serveProcedures(WithGRPCWebText(mux))
	msg, err := proto.Marshal(&healthpb.HealthCheckRequest{Service: "handoff.test.v1.Nothing"})
	if err != nil {
		t.Fatal(err)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write(msg)
	_ = zw.Close()
	for _, c := range []struct {
		name     string
		body     []byte
		encoding string // grpc-encoding
		want     string // grpc-status
	}{
		{"a length prefix past the body's end", append(envelope(0, msg)[:5], msg[:1]...), "", "3"},
		{"a truncated prefix", []byte{0, 0, 0}, "", "3"},
		{"a message after a truncated one", append(envelope(0, msg), 0, 0), "", "3"},
		{"an unknown flag", envelope(0x40, msg), "", "3"},
		{"an unknown flag on an empty message", envelope(0x40, nil), "", "3"},
		{"compressed, no grpc-encoding", envelope(1, zipped.Bytes()), "", "3"},
		{"compressed, grpc-encoding identity", envelope(1, zipped.Bytes()), "identity", "3"},
		{"compressed, grpc-encoding gzip", envelope(1, zipped.Bytes()), "gzip", "0"},
		{"two messages", append(envelope(0, msg), envelope(0, msg)...), "", "12"},
		{"no message", nil, "", "12"},
		{"trailers only", envelope(0x80, []byte("grpc-status: 0")), "", "12"},
		{"one message", envelope(0, msg), "", "0"},
	} {
		for _, text := range []bool{false, true} {
			body, ct := c.body, "application/grpc-web+proto"
			if text {
				body, ct = []byte(base64.StdEncoding.EncodeToString(c.body)), "application/grpc-web-text"
			}
			req := httptest.NewRequest(http.MethodPost, "/grpc.health.v1.Health/Check", bytes.NewReader(body))
			req.Header.Set("Content-Type", ct)
			if c.encoding != "" {
				req.Header.Set("Grpc-Encoding", c.encoding)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			answer := rec.Body.Bytes()
			if text {
				answer, _ = decodeText(answer)
			}
			code, m := webStatus(rec.Header(), answer)
			if c.encoding == "gzip" && code == "" && len(answer) > 0 && answer[0] == 1 {
				code = "0" // a compressed reply, its trailers compressed too
			}
			if code != c.want {
				t.Errorf("%s (%s): grpc-status %s %q; want %s", c.name, ct, code, m, c.want)
			}
		}
	}

	// A gRPC client sends no trailers: their flag is as unknown as 0x40.
	req := httptest.NewRequest(http.MethodPost, "/grpc.health.v1.Health/Check", bytes.NewReader(envelope(0x80, nil)))
	req.Header.Set("Content-Type", "application/grpc")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if tr := rec.Result().Trailer; tr.Get("Grpc-Status") != "3" {
		t.Errorf("a trailer frame from a gRPC client: grpc-status %s %q; want 3", tr.Get("Grpc-Status"), tr.Get("Grpc-Message"))
	}
}

// A reflection stream carries any number of requests: each after the first counts against its
// address's calls, as a call of its own would.
func TestReflectionRequestsOnOneStreamAreLimitedPerAddress(t *testing.T) {
	_, addr := serveMounted(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(grpcConn(t, addr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 10 * openPerAddressBurst
	start := time.Now()
	for i := range n {
		err := stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.Health"}})
		if err == nil || errors.Is(err, io.EOF) { // EOF: the server ended the stream; Recv says how
			_, err = stream.Recv()
		}
		if status.Code(err) == codes.ResourceExhausted {
			return // refused once over the limit
		}
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// Without a refusal, n requests must have taken as long as the limit allows them.
	if allowed := float64(openPerAddressBurst) + openPerAddress*time.Since(start).Seconds(); float64(n) > allowed {
		t.Errorf("%d reflection requests answered on one stream in %s; the per-address limit allows %.0f", n, time.Since(start).Round(time.Millisecond), allowed)
	}
}

// Anonymous streams (health Watch, reflection) are bounded in number per address, not only in
// how fast they open: each holds a goroutine for as long as its client keeps it.
func TestAnAddressHoldsABoundedNumberOfOpenStreams(t *testing.T) {
	_, addr := serveMounted(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	client := healthpb.NewHealthClient(grpcConn(t, addr))
	for i := range openStreamsPerAddress + 1 {
		time.Sleep(time.Second / (openPerAddress / 2)) // well under the rate limit
		w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		switch {
		case i < openStreamsPerAddress && err != nil:
			t.Fatalf("stream %d: %v", i+1, err)
		case i == openStreamsPerAddress && status.Code(err) != codes.ResourceExhausted:
			t.Fatalf("stream %d of one address, %d open: %v; want ResourceExhausted", i+1, openStreamsPerAddress, err)
		}
	}
}

// An HTTP/2 client that goes silent (a half-open connection: it answers nothing, not even a
// ping) has its connection closed once a ping goes unanswered, long before the idle timeout.
func TestASilentHTTP2ConnectionIsClosedWhenItsPingGoesUnanswered(t *testing.T) {
	wasAfter, wasTimeout := pingAfter, pingTimeout
	t.Cleanup(func() { pingAfter, pingTimeout = wasAfter, wasTimeout }) // after the server has stopped
	pingAfter, pingTimeout = 200*time.Millisecond, 200*time.Millisecond
	_, addr := serveMounted(t)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The client preface and an empty SETTINGS frame; then nothing, whatever the server sends.
	if _, err := io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("a silent HTTP/2 connection was still open after 5 s")
		}
	}
}
