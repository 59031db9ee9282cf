package natsrpc_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var echoSubject = natsrpc.Subject("test", "echo")

// serve starts a service answering echoSubject with h on its own connection.
func serve(t *testing.T, nc *nats.Conn, h func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)) *natsrpc.Service {
	t.Helper()
	svc, err := natsrpc.AddService(nc, "test", "1.0.0", "natsrpc tests", testenv.Logger(t))
	if err != nil {
		t.Fatalf("AddService: %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := natsrpc.Handle(svc, echoSubject, h); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	return svc
}

func setup(t *testing.T) (server, client *nats.Conn) {
	t.Helper()
	s := testenv.NATS(t)
	return testenv.NATSConn(t, s), testenv.NATSConn(t, s)
}

func call(ctx context.Context, nc *nats.Conn, in string) (string, error) {
	var res wrapperspb.StringValue
	err := natsrpc.Call(ctx, nc, echoSubject, wrapperspb.String(in), &res)
	return res.GetValue(), err
}

func TestCallRoundTripsRequestAndResponse(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return wrapperspb.String("hello " + req.GetValue()), nil
	})
	got, err := call(t.Context(), cli, "store 42")
	if err != nil || got != "hello store 42" {
		t.Fatalf("Call = %q, %v; want %q, nil", got, err, "hello store 42")
	}
}

func TestStatusCodeMessageAndDetailsSurviveTheTrip(t *testing.T) {
	srv, cli := setup(t)
	want, err := status.New(codes.FailedPrecondition, "store 42 is paused\nuntil 14:00").WithDetails(
		&errdetails.ErrorInfo{Reason: "STORE_PAUSED", Domain: "handoff.dev", Metadata: map[string]string{"store_id": "42"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "store_id", Description: "paused"}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv, func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, want.Err()
	})
	_, err = call(t.Context(), cli, "x")
	got, ok := status.FromError(err)
	if !ok {
		t.Fatalf("Call error %v is not a status", err)
	}
	if !proto.Equal(got.Proto(), want.Proto()) {
		t.Fatalf("status changed on the way:\n got  %v\n want %v", got.Proto(), want.Proto())
	}
}

func TestErrorReplyCarriesMicroHeadersWithTheGRPCCode(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, status.Error(codes.NotFound, "sku 7 not found")
	})
	data, _ := proto.Marshal(wrapperspb.String("x"))
	reply, err := cli.Request(echoSubject, data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.Header.Get(micro.ErrorCodeHeader); got != "5" {
		t.Errorf("%s = %q, want 5", micro.ErrorCodeHeader, got)
	}
	if got := reply.Header.Get(micro.ErrorHeader); got != "sku 7 not found" {
		t.Errorf("%s = %q, want the message", micro.ErrorHeader, got)
	}
	if got := reply.Header.Get(natsrpc.CodeNameHeader); got != "NOT_FOUND" {
		t.Errorf("%s = %q, want NOT_FOUND", natsrpc.CodeNameHeader, got)
	}
}

func TestPlainErrorBecomesInternalWithoutLeakingItsText(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, errors.New("pq: relation inventory.secret_table does not exist")
	})
	_, err := call(t.Context(), cli, "x")
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Fatalf("Call error = %v; want Internal with a generic message", err)
	}
}

func TestHandlerContextCarriesTheCallersDeadline(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return wrapperspb.String("none"), nil
		}
		return wrapperspb.String(strconv.FormatInt(dl.UnixNano(), 10)), nil
	})

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()
	got, err := call(ctx, cli, "x")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseInt(got, 10, 64)
	if err != nil {
		t.Fatalf("handler saw no deadline (%q)", got)
	}
	if skew := time.Unix(0, ns).Sub(callerDeadline); skew < -50*time.Millisecond || skew > 100*time.Millisecond {
		t.Fatalf("handler deadline is %v off the caller's", skew)
	}

	// Without a deadline the call, and so the handler, gets the default.
	start := time.Now()
	got, err = call(context.Background(), cli, "x")
	if err != nil {
		t.Fatal(err)
	}
	ns, _ = strconv.ParseInt(got, 10, 64)
	if budget := time.Unix(0, ns).Sub(start); budget < natsrpc.DefaultTimeout-time.Second || budget > natsrpc.DefaultTimeout+time.Second {
		t.Fatalf("handler budget without a caller deadline = %v, want about %v", budget, natsrpc.DefaultTimeout)
	}
}

func TestNoRespondersIsUnavailable(t *testing.T) {
	_, cli := setup(t)
	_, err := call(t.Context(), cli, "x")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Call with nobody serving = %v; want Unavailable", err)
	}
	// Told further on, it names no subject.
	if m := natsrpc.Message(err); strings.Contains(m, "handoff.") || strings.Contains(m, "natsrpc") || m == "" {
		t.Fatalf("Message = %q; want plain words", m)
	}
	// What a service answered is told as it is.
	if m := natsrpc.Message(status.Error(codes.FailedPrecondition, "store s1 is paused")); m != "store s1 is paused" {
		t.Fatalf("Message of a service's answer = %q", m)
	}
}

func TestHandlerSlowerThanTheDeadlineIsDeadlineExceeded(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		<-ctx.Done() // a handler that would take longer than the caller waits
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := call(ctx, cli, "x")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Call = %v; want DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("Call took %v with a 200ms deadline", elapsed)
	}
}

func TestPanicIsInternalAndTheServiceKeepsAnswering(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if req.GetValue() == "boom" {
			panic("nil map in the pricing code")
		}
		return req, nil
	})
	if _, err := call(t.Context(), cli, "boom"); status.Code(err) != codes.Internal {
		t.Fatalf("Call to a panicking handler = %v; want Internal", err)
	}
	if got, err := call(t.Context(), cli, "still here"); err != nil || got != "still here" {
		t.Fatalf("Call after the panic = %q, %v; want the echo", got, err)
	}
}

// serveEcho serves an echo on srv and returns whether its handler was ever called.
func serveEcho(t *testing.T, srv *nats.Conn) *atomic.Bool {
	t.Helper()
	var called atomic.Bool
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		called.Store(true)
		return req, nil
	})
	return &called
}

func TestMalformedRequestIsInvalidArgumentAndNeverReachesTheHandler(t *testing.T) {
	srv, cli := setup(t)
	called := serveEcho(t, srv)
	reply, err := cli.Request(echoSubject, []byte{0xff, 0xff, 0xff}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.Header.Get(micro.ErrorCodeHeader); got != strconv.Itoa(int(codes.InvalidArgument)) {
		t.Fatalf("reply code %q, want InvalidArgument (3)", got)
	}
	if called.Load() {
		t.Fatal("handler ran on a malformed request")
	}
}

// A string that is not valid UTF-8 is refused before the handler, naming the field (protobuf's
// own refusal names none).
func TestRequestWithInvalidUTF8NamesTheField(t *testing.T) {
	srv, cli := setup(t)
	called := serveEcho(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	// Field 1 (value), 3 bytes, not UTF-8.
	reply, err := cli.RequestWithContext(ctx, echoSubject, []byte{0x0a, 0x03, 0xff, 0xfe, 0x41})
	if err != nil {
		t.Fatal(err)
	}
	if got, msg := reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader); got != strconv.Itoa(int(codes.InvalidArgument)) || !strings.HasPrefix(msg, "value:") {
		t.Fatalf("reply code %q, message %q; want InvalidArgument (3) naming value", got, msg)
	}
	if called.Load() {
		t.Fatal("handler ran on a request that is not UTF-8")
	}
}

// Text Postgres cannot store is refused before the handler, naming the field: a handler that
// reserves stock and then writes would otherwise hold the stock and fail at the write.
func TestRequestWithANULIsInvalidArgumentAndNeverReachesTheHandler(t *testing.T) {
	srv, cli := setup(t)
	called := serveEcho(t, srv)
	_, err := call(t.Context(), cli, "a\x00b")
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "value:") {
		t.Fatalf("a request with a NUL: %v; want InvalidArgument naming value", err)
	}
	if called.Load() {
		t.Fatal("handler ran on a request with a NUL")
	}
}

func TestCopiesOfAServiceShareRequests(t *testing.T) {
	s := testenv.NATS(t)
	cli := testenv.NATSConn(t, s)
	var answered [2]atomic.Int32
	for i := range answered {
		serve(t, testenv.NATSConn(t, s), func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			answered[i].Add(1)
			return req, nil
		})
	}
	for i := range 60 {
		if _, err := call(t.Context(), cli, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if answered[0].Load() == 0 || answered[1].Load() == 0 {
		t.Fatalf("requests answered per copy = %d, %d; want both to share", answered[0].Load(), answered[1].Load())
	}
}

func TestServiceIsDiscoverableWithItsEndpoints(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) { return req, nil })
	reply, err := cli.Request("$SRV.INFO.test", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(reply.Data), `"subject":"`+echoSubject+`"`) {
		t.Fatalf("$SRV.INFO does not list %s: %s", echoSubject, reply.Data)
	}
}

func TestHandleRefusesSubjectsOutsideTheRPCSpace(t *testing.T) {
	srv, _ := setup(t)
	svc, err := natsrpc.AddService(srv, "test", "1.0.0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	h := func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) { return req, nil }
	for _, subj := range []string{"handoff.catalog.product.created", "handoff.rpc.catalog", "handoff.rpc.catalog.*", "handoff.rpc.>"} {
		if err := natsrpc.Handle(svc, subj, h); err == nil {
			t.Errorf("Handle(%q) accepted a subject outside handoff.rpc.<service>.<method>", subj)
		}
	}
}

// A handler blocked on the database must not hold up the requests behind it: here ten
// requests each wait until all ten are in the handler at once, which a one-at-a-time
// endpoint could never reach.
func TestRequestsAreHandledConcurrently(t *testing.T) {
	srv, cli := setup(t)
	const n = 10
	var arrived sync.WaitGroup
	arrived.Add(n)
	serve(t, srv, func(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		arrived.Done()
		all := make(chan struct{})
		go func() { arrived.Wait(); close(all) }()
		select {
		case <-all:
			return req, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := call(ctx, cli, strconv.Itoa(i))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent call: %v (requests were not handled side by side)", err)
		}
	}
}

// Error replies from handlers running side by side keep their status, and (under -race) touch
// nothing micro reads after its handler returns.
func TestConcurrentErrorRepliesKeepTheirStatus(t *testing.T) {
	srv, cli := setup(t)
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, status.Errorf(codes.InvalidArgument, "bad %s", req.GetValue())
	})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_, err := call(t.Context(), cli, strconv.Itoa(i))
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "bad "+strconv.Itoa(i) {
				t.Errorf("call %d: %v; want InvalidArgument %q", i, err, "bad "+strconv.Itoa(i))
			}
		})
	}
	wg.Wait()
}

// Shutdown waits for the requests in flight to be answered (the pool a handler uses closes
// after it), and a request arriving after it is refused as Unavailable, never half-handled.
func TestShutdownWaitsForRequestsInFlight(t *testing.T) {
	srv, cli := setup(t)
	started, release := make(chan struct{}), make(chan struct{})
	svc := serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		close(started)
		<-release
		return wrapperspb.String("done " + req.GetValue()), nil
	})
	answered := make(chan error, 1)
	go func() {
		got, err := call(t.Context(), cli, "order-1")
		if err == nil && got != "done order-1" {
			err = fmt.Errorf("answer %q", got)
		}
		answered <- err
	}()
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- svc.Shutdown(t.Context()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) with a request still in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := call(t.Context(), cli, "order-2"); status.Code(err) != codes.Unavailable {
		t.Fatalf("a request during shutdown: %v; want Unavailable", err)
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-answered; err != nil {
		t.Fatalf("the request in flight at shutdown: %v", err)
	}

	// A handler that never finishes does not hold shutdown past its context.
	srv2, cli2 := setup(t)
	svc2 := serve(t, srv2, func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	go func() { _, _ = call(t.Context(), cli2, "stuck") }()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := svc2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck request: %v; want the context's deadline", err)
	}
}

// A request that reaches its handler only after its caller's deadline (it waited in a busy
// server's queue, or in a reconnecting client's buffer) is refused unhandled: no work starts
// that its caller has stopped waiting for, such as an order placed after the cart gave up.
func TestARequestPastItsDeadlineIsNotHandled(t *testing.T) {
	srv, cli := setup(t)
	var handled atomic.Int32
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		handled.Add(1)
		return req, nil
	})
	data, err := proto.Marshal(wrapperspb.String("late"))
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: echoSubject, Data: data, Header: nats.Header{
		natsrpc.TimeoutHeader:  []string{"5000"},
		natsrpc.DeadlineHeader: []string{strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10)},
	}}
	reply, err := cli.RequestMsg(msg, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != strconv.Itoa(int(codes.DeadlineExceeded)) {
		t.Fatalf("a request past its deadline answered %v (%q); want DeadlineExceeded", reply.Header, reply.Data)
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("the handler ran %d times for a request past its deadline", n)
	}
	// In time, it is handled.
	if got, err := call(t.Context(), cli, "on time"); err != nil || got != "on time" {
		t.Fatalf("a request in time: %q, %v", got, err)
	}
}

// smallPayload is the max_payload of the servers of the size tests: well under the replies and
// requests they send.
const smallPayload = 16 << 10

func setupSmallPayload(t *testing.T) (server, client *nats.Conn) {
	t.Helper()
	s := testenv.NATS(t, func(o *natsserver.Options) { o.MaxPayload = smallPayload })
	return testenv.NATSConn(t, s), testenv.NATSConn(t, s)
}

func TestReplyTooBigIsAnsweredAsResourceExhausted(t *testing.T) {
	srv, cli := setupSmallPayload(t)
	var handled atomic.Int32
	big := wrapperspb.String(strings.Repeat("x", 4*smallPayload))
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if req.GetValue() != "big" {
			return req, nil
		}
		handled.Add(1)
		return big, nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := call(ctx, cli, "big")
	// Dropped, the reply leaves the caller waiting out its deadline (DeadlineExceeded: it cannot
	// tell whether the work was done); the caller must hear at once that the answer was too big.
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Call error = %v after %v; want ResourceExhausted", err, time.Since(start))
	}
	msg := status.Convert(err).Message()
	for _, want := range []string{echoSubject, strconv.Itoa(proto.Size(big)), strconv.Itoa(smallPayload)} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not name %q", msg, want)
		}
	}
	if handled.Load() != 1 || errors.Is(err, natsrpc.ErrNotSent) {
		t.Errorf("handler ran %d times, want 1; error matches ErrNotSent: %v, want false", handled.Load(), errors.Is(err, natsrpc.ErrNotSent))
	}
	// Small answers still go through on the same service.
	if got, err := call(t.Context(), cli, "small"); err != nil || got != "small" {
		t.Fatalf("small call = %q, %v", got, err)
	}
}

func TestRequestTooBigIsResourceExhaustedNotUnavailable(t *testing.T) {
	srv, cli := setupSmallPayload(t)
	serve(t, srv, func(_ context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return req, nil
	})
	// Unavailable would tell the caller to retry what can never be sent.
	_, err := call(t.Context(), cli, strings.Repeat("x", 2*smallPayload))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Call error = %v; want ResourceExhausted", err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, echoSubject) || !strings.Contains(msg, strconv.Itoa(smallPayload)) {
		t.Errorf("message %q names neither the subject nor the limit", msg)
	}
	// The caller can tell that nothing was done: a reply too big came of a handled request.
	if !errors.Is(err, natsrpc.ErrNotSent) {
		t.Errorf("Call error = %v; want it to match ErrNotSent", err)
	}
	if got, err := call(t.Context(), cli, "small"); err != nil || got != "small" {
		t.Fatalf("small call = %q, %v", got, err)
	}
}
