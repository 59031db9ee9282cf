package posadapter_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

func TestHealthReflectionAndCORSServeStandardClientsAndBrowserTerminals(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.AllowedOrigins = []string{"http://till.example"} }))
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, svc := range []string{"", posv1connect.TerminalServiceName, posv1connect.TerminalAdminServiceName} {
		res, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q = %v, %v; want SERVING", svc, res, err)
		}
	}
	stream := grpcreflect.NewClient(e.h2c, e.base, connect.WithGRPC()).NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(fullNames(names), ","), posv1connect.TerminalServiceName) {
		t.Fatalf("reflection lists %v; want TerminalService", names)
	}

	pre, _ := http.NewRequest(http.MethodOptions, e.base+posv1connect.TerminalServiceStreamTicketsProcedure, nil)
	pre.Header.Set("Origin", "http://till.example")
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-grpc-web,x-user-agent")
	res, err := e.http1.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "http://till.example" {
		t.Fatalf("preflight from a browser terminal allowed origin %q", got)
	}
}

func fullNames[T ~string](names []T) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = string(n)
	}
	return out
}

// A terminal guessing pickup codes across many orders is slowed down at the door once its
// refusals pile up, before more guesses reach fulfilment; hand-overs that succeed are never
// charged, so a busy counter is not slowed.
func TestRefusedPickupCodeAttemptsAreRateLimitedPerTerminal(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "guess-1", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "guess-1")
	term := e.terminal(overGRPCWeb, cred)
	limited := 0
	for i := range 30 {
		_, err := term.HandOver(t.Context(), req(&posv1.HandOverRequest{StoreId: "guess-1", OrderId: fmt.Sprintf("order-%d", i), PickupCode: "000000"}))
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			limited++
		case connect.CodeNotFound:
		default:
			t.Fatalf("guess %d: %v; want NotFound or ResourceExhausted", i, err)
		}
	}
	if limited == 0 {
		t.Fatal("30 refused pickup-code attempts in a burst were never limited")
	}
	if limited > 25 {
		t.Fatalf("%d of 30 attempts limited; a burst of 10 should pass", limited)
	}
	// Another terminal is not slowed by this one.
	_, other := e.register("Other counter", "guess-1")
	_, err := e.terminal(overGRPCWeb, other).HandOver(t.Context(), req(&posv1.HandOverRequest{StoreId: "guess-1", OrderId: "order-x", PickupCode: "000000"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("another terminal: %v; want NotFound, not limited", err)
	}
}

// Once a terminal has had a code refused, guesses sent all at once get no more tries than it
// has left: each one under way counts against what is left, so they cannot all see the same
// allowance. (Before any refusal, hand-overs at once are not limited: a busy counter.)
func TestConcurrentPickupCodeGuessesGetNoMoreThanTheTerminalHasLeft(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "guess-2", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "guess-2")
	term := e.terminal(overGRPCWeb, cred)
	if _, err := term.HandOver(t.Context(), req(&posv1.HandOverRequest{StoreId: "guess-2", OrderId: "order-first", PickupCode: "000000"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("a first wrong guess: %v; want NotFound", err)
	}
	const guesses = 40
	codes := make(chan connect.Code, guesses)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range guesses {
		wg.Go(func() {
			<-start
			_, err := term.HandOver(t.Context(), req(&posv1.HandOverRequest{StoreId: "guess-2", OrderId: fmt.Sprintf("order-%d", i), PickupCode: "000000"}))
			codes <- connect.CodeOf(err)
		})
	}
	close(start)
	wg.Wait()
	close(codes)
	reached, limited := 0, 0
	for c := range codes {
		switch c {
		case connect.CodeNotFound:
			reached++
		case connect.CodeResourceExhausted:
			limited++
		default:
			t.Fatalf("a guess: %v; want NotFound or ResourceExhausted", c)
		}
	}
	// 9 of the burst of 10 are left, and a little refills while the guesses run.
	if reached > 11 {
		t.Fatalf("%d of %d simultaneous guesses reached fulfilment (%d limited); want at most the 9 left", reached, guesses, limited)
	}
}

// judgedThenAbandoned forwards hand-overs to fulfilment, which judges them, and answers as a
// caller that gave up meanwhile would see it: Canceled.
type judgedThenAbandoned struct{ grpc.ClientConnInterface }

func (c judgedThenAbandoned) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	if strings.HasSuffix(method, "/HandOver") {
		return status.Error(codes.Canceled, "the caller gave up")
	}
	return err
}

// A guess the caller abandons is still judged by fulfilment (a change whose batch has begun
// is decided whatever its caller does), so it is charged like a refusal: a guesser cancelling
// every call is slowed down at the door all the same.
func TestAbandonedPickupCodeGuessesAreChargedToTheTerminal(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s), withConfig(func(c *posadapter.Config) {
		c.Fulfilment = judgedThenAbandoned{c.Fulfilment}
	}))
	s.addStore(t, "guess-3", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "guess-3")
	term := e.terminal(overGRPC, cred)
	for i := range 20 {
		_, err := term.HandOver(t.Context(), req(&posv1.HandOverRequest{StoreId: "guess-3", OrderId: fmt.Sprintf("order-%d", i), PickupCode: "000000"}))
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			if i < 10 {
				t.Fatalf("limited at guess %d; the burst is 10", i)
			}
			return
		case connect.CodeCanceled:
		default:
			t.Fatalf("guess %d: %v; want Canceled or ResourceExhausted", i, err)
		}
	}
	t.Fatal("20 abandoned guesses in a burst were never limited")
}

// A string that is not UTF-8 is refused naming the field, by a caller with a credential (one
// without is refused as such first, before its body is read).
func TestInvalidUTF8IsRefusedNamingTheField(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "utf-1")
	bad := []byte{0x0a, 0x03, 0xff, 0xfe, 0x41} // store_id: 3 bytes, not UTF-8
	c := posv1connect.NewTerminalServiceClient(http.DefaultClient, e.base, connect.WithGRPCWeb(), testenv.SendBytes(bad),
		connect.WithInterceptors(bearer(cred)))
	_, err := c.AckTicket(t.Context(), req(&posv1.AckTicketRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "store_id: not valid UTF-8") {
		t.Fatalf("AckTicket with a store_id that is not UTF-8: %v; want InvalidArgument naming store_id", err)
	}
}

// A call is authenticated when its headers are in: one without a credential is refused at once,
// not after a body its caller may trickle in for as long as the edge waits (30 s), holding a
// connection and a goroutine, unauthenticated, per call.
func TestACallWithoutACredentialIsRefusedBeforeItsBody(t *testing.T) {
	e := newEnv(t)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST "+posv1connect.TerminalServiceAckTicketProcedure+" HTTP/1.1\r\nHost: pos\r\n"+
		"Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("a call without a credential, its body not sent: %v; want it refused at once", err)
	}
	_ = res.Body.Close()
	if got := res.Header.Get("Grpc-Status"); got != fmt.Sprint(int(codes.Unauthenticated)) {
		t.Fatalf("grpc-status %q (%s); want Unauthenticated", got, res.Header.Get("Grpc-Message"))
	}
}
