package posadapter_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/handoff-dev/handoff/internal/auth"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// startCopy runs a second adapter beside the env's (same database, same NATS) and returns
// its base URL: two copies of the adapter, as a deployment scales out.
func (e *env) startCopy() string {
	e.t.Helper()
	a, err := posadapter.New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(ctx) })
	wg.Go(func() { _ = a.Serve(ctx, lis, 100*time.Millisecond) })
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	return "http://" + lis.Addr().String()
}

func TestStoreACredentialCannotSeeOrActForStoreB(t *testing.T) {
	e := newEnv(t)
	_, credA := e.register("A", "perm-a")
	_, credB := e.register("B", "perm-b")
	staffA := e.token(auth.Principal{Subject: "barista-7", Role: auth.RoleStaff, Stores: []string{"perm-a"}})
	o := order("perm-b", 1)
	e.publish("confirmed", o, nil)
	ticketB := e.openFeed(e.terminal(overGRPC, credB), "perm-b").take(1, 5*time.Second)[0]
	ctx := context.Background()

	for _, p := range protocols {
		for who, tok := range map[string]string{"terminal of A": credA, "staff token of A": staffA} {
			c := e.terminal(p, tok)
			name := p.name + ", " + who
			if err := e.openFeed(c, "perm-b").end(5 * time.Second); codeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "store_id") {
				t.Fatalf("%s: B's feed: %v; want PermissionDenied naming store_id", name, err)
			}
			calls := map[string]error{}
			_, calls["AckTicket"] = c.AckTicket(ctx, req(&posv1.AckTicketRequest{StoreId: "perm-b", TicketId: ticketB.GetTicketId()}))
			_, calls["ListStoreOrders"] = c.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "perm-b"}))
			_, calls["AcceptOrder"] = c.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "perm-b", OrderId: o.GetId()}))
			_, calls["MarkLineUnavailable"] = c.MarkLineUnavailable(ctx, req(&posv1.MarkLineUnavailableRequest{StoreId: "perm-b", OrderId: o.GetId(), LineId: "l1"}))
			_, calls["MarkReady"] = c.MarkReady(ctx, req(&posv1.MarkReadyRequest{StoreId: "perm-b", OrderId: o.GetId()}))
			_, calls["HandOver"] = c.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "perm-b", OrderId: o.GetId(), PickupCode: "123456"}))
			_, calls["CancelOrder"] = c.CancelOrder(ctx, req(&posv1.CancelOrderRequest{StoreId: "perm-b", OrderId: o.GetId(), Reason: "x"}))
			_, calls["PauseStore"] = c.PauseStore(ctx, req(&posv1.PauseStoreRequest{StoreId: "perm-b"}))
			_, calls["ResumeStore"] = c.ResumeStore(ctx, req(&posv1.ResumeStoreRequest{StoreId: "perm-b"}))
			// Fulfilment and inventory are unreachable here: a call forwarded would be
			// Unavailable, so PermissionDenied proves it never left the adapter.
			for call, err := range calls {
				if codeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "store_id") {
					t.Errorf("%s: %s for store B: %v; want PermissionDenied naming store_id", name, call, err)
				}
			}
			// Its own store id with B's ticket: not found there.
			_, err := c.AckTicket(ctx, req(&posv1.AckTicketRequest{StoreId: "perm-a", TicketId: ticketB.GetTicketId()}))
			if codeOf(err) != connect.CodeNotFound {
				t.Errorf("%s: B's ticket acknowledged as A's: %v; want NotFound", name, err)
			}
		}
	}
	var acks int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM ticket_acks`).Scan(&acks); err != nil || acks != 0 {
		t.Fatalf("%d acknowledgements recorded (%v); want none", acks, err)
	}
	// B still has its ticket to handle.
	if got := e.openFeed(e.terminal(overGRPCWeb, credB), "perm-b").take(1, 5*time.Second)[0]; got.GetTicketId() != ticketB.GetTicketId() {
		t.Fatalf("B's feed replays %s, want %s", got.GetTicketId(), ticketB.GetTicketId())
	}
}

func TestTerminalOfSeveralStoresReadsEachOfThem(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Area manager tablet", "multi-1", "multi-2")
	c := e.terminal(overGRPC, cred)
	e.publish("confirmed", order("multi-1", 1), nil)
	e.publish("confirmed", order("multi-2", 1), nil)
	for _, store := range []string{"multi-1", "multi-2"} {
		if got := e.openFeed(c, store).take(1, 5*time.Second)[0]; got.GetStoreId() != store {
			t.Fatalf("feed of %s gave a ticket of %s", store, got.GetStoreId())
		}
	}
	if err := e.openFeed(c, "multi-3").end(5 * time.Second); codeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("a third store: %v; want PermissionDenied", err)
	}
}

func TestCallersWithoutTheRightCredentialAreRefused(t *testing.T) {
	e := newEnv(t)
	id, cred := e.register("Counter", "cred-1")
	foreign := forgeToken(t, auth.Principal{Subject: "x", Role: auth.RoleStaff, Stores: []string{"cred-1"}})
	cases := []struct {
		name, token string
		want        connect.Code
	}{
		{"no token", "", connect.CodeUnauthenticated},
		{"malformed credential", "hot_nope", connect.CodeUnauthenticated},
		{"wrong secret", "hot_" + id + "_" + strings.Repeat("ab", 32), connect.CodeUnauthenticated},
		{"unknown terminal", "hot_trmnothere_" + strings.Repeat("ab", 32), connect.CodeUnauthenticated},
		{"token of another key", foreign, connect.CodeUnauthenticated},
		{"customer token", e.token(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}), connect.CodePermissionDenied},
		{"credential", cred, 0},
		{"admin token", e.token(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}), 0},
	}
	for _, p := range protocols {
		for _, c := range cases {
			var opts []connect.ClientOption
			if c.token != "" {
				opts = append(opts, connect.WithInterceptors(bearer(c.token)))
			}
			cl := posv1connect.NewTerminalServiceClient(e.httpClient(p), e.base, append(opts, p.opts...)...)
			f := e.openFeed(cl, "cred-1")
			if c.want == 0 {
				f.quiet(100 * time.Millisecond)
				f.close()
				continue
			}
			if err := f.end(5 * time.Second); codeOf(err) != c.want {
				t.Errorf("%s over %s: StreamTickets: %v; want %v", c.name, p.name, err, c.want)
			}
			_, err := cl.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: "cred-1", TicketId: "0190a8f0-0000-7000-8000-000000000000"}))
			if codeOf(err) != c.want {
				t.Errorf("%s over %s: AckTicket: %v; want %v", c.name, p.name, err, c.want)
			}
		}
	}

	// The admin API is for admin tokens only.
	for who, tok := range map[string]string{
		"terminal credential": cred,
		"staff token":         e.token(auth.Principal{Subject: "s", Role: auth.RoleStaff, Stores: []string{"cred-1"}}),
	} {
		admin := posv1connect.NewTerminalAdminServiceClient(e.h2c, e.base, connect.WithGRPC(), connect.WithInterceptors(bearer(tok)))
		_, err := admin.RegisterTerminal(context.Background(), req(&posv1.RegisterTerminalRequest{Name: "sneaky", StoreIds: []string{"cred-1"}}))
		if codeOf(err) != connect.CodePermissionDenied {
			t.Errorf("%s on the admin API: %v; want PermissionDenied", who, err)
		}
	}
	_, err := e.admin().RegisterTerminal(context.Background(), req(&posv1.RegisterTerminalRequest{Name: "", StoreIds: []string{"Bad Store"}}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "name") || !strings.Contains(err.Error(), "store_ids[0]") {
		t.Errorf("bad registration: %v; want InvalidArgument naming name and store_ids[0]", err)
	}
	// Text Postgres cannot store is refused naming the field, not failed as Internal at the
	// write, and nothing is registered.
	_, err = e.admin().RegisterTerminal(context.Background(), req(&posv1.RegisterTerminalRequest{Name: "Till\x00", StoreIds: []string{"cred-1"}}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "name: must not contain NUL") {
		t.Errorf("a name with a NUL: %v; want InvalidArgument naming name", err)
	}
	list, err := e.admin().ListTerminals(context.Background(), req(&posv1.ListTerminalsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, term := range list.Msg.GetTerminals() {
		if strings.HasPrefix(term.GetName(), "Till") {
			t.Errorf("terminal %q was registered", term.GetName())
		}
	}
}

// forgeToken signs a well-formed token with a key Handoff does not have.
func forgeToken(t *testing.T, p auth.Principal) string {
	t.Helper()
	ks, err := auth.ParseKeySet("test:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("z", 32))))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ks.Issue(p, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRevokedTerminalIsRefusedAtOnceAndItsStreamsCloseInEveryCopy(t *testing.T) {
	e := newEnv(t)
	copyBase := e.startCopy()
	id, cred := e.register("Stolen tablet", "rev-1")
	_, keep := e.register("Counter", "rev-1")
	here := e.terminal(overGRPC, cred)
	there := posv1connect.NewTerminalServiceClient(e.http1, copyBase, connect.WithGRPCWeb(), connect.WithInterceptors(bearer(cred)))
	fHere, fThere := e.openFeed(here, "rev-1"), e.openFeed(there, "rev-1")
	fKeep := e.openFeed(e.terminal(overGRPC, keep), "rev-1")
	e.publish("confirmed", order("rev-1", 1), nil)
	fHere.take(1, 5*time.Second)
	fThere.take(1, 5*time.Second)
	fKeep.take(1, 5*time.Second)

	list, err := e.admin().ListTerminals(context.Background(), req(&posv1.ListTerminalsRequest{StoreId: "rev-1"}))
	if err != nil || len(list.Msg.GetTerminals()) != 2 || list.Msg.GetTerminals()[0].GetLastSeenTime() == nil {
		t.Fatalf("ListTerminals = %v, %v; want both, seen", list, err)
	}

	start := time.Now()
	res, err := e.admin().RevokeTerminal(context.Background(), req(&posv1.RevokeTerminalRequest{TerminalId: id}))
	if err != nil || res.Msg.GetTerminal().GetRevokeTime() == nil {
		t.Fatalf("RevokeTerminal = %v, %v", res, err)
	}
	for name, f := range map[string]*feed{"this copy": fHere, "the other copy": fThere} {
		if err := f.end(3 * time.Second); codeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("stream on %s ended with %v; want Unauthenticated", name, err)
		}
	}
	t.Logf("both streams closed %s after the revocation", time.Since(start))
	if _, err := here.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: "rev-1", TicketId: "0190a8f0-0000-7000-8000-000000000000"})); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("revoked credential: %v; want Unauthenticated", err)
	}
	if err := e.openFeed(there, "rev-1").end(3 * time.Second); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("revoked credential reconnecting: %v; want Unauthenticated", err)
	}
	fKeep.quiet(200 * time.Millisecond) // the store's other terminal is untouched
	select {
	case err := <-fKeep.done:
		t.Fatalf("the other terminal's stream ended: %v", err)
	default:
	}

	again, err := e.admin().RevokeTerminal(context.Background(), req(&posv1.RevokeTerminalRequest{TerminalId: id}))
	if err != nil || !again.Msg.GetTerminal().GetRevokeTime().AsTime().Equal(res.Msg.GetTerminal().GetRevokeTime().AsTime()) {
		t.Fatalf("revoking twice = %v, %v; want the first revocation kept", again, err)
	}
	list, _ = e.admin().ListTerminals(context.Background(), req(&posv1.ListTerminalsRequest{StoreId: "rev-1"}))
	all, _ := e.admin().ListTerminals(context.Background(), req(&posv1.ListTerminalsRequest{StoreId: "rev-1", IncludeRevoked: true}))
	if len(list.Msg.GetTerminals()) != 1 || len(all.Msg.GetTerminals()) != 2 {
		t.Fatalf("after revocation: %d active, %d in all; want 1 and 2", len(list.Msg.GetTerminals()), len(all.Msg.GetTerminals()))
	}
	if _, err := e.admin().RevokeTerminal(context.Background(), req(&posv1.RevokeTerminalRequest{TerminalId: "trmnothere"})); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("revoking an unknown terminal: %v; want NotFound", err)
	}
}

// A ticket stream opened with a staff token ends, as Unauthenticated, when the token expires:
// tickets carry shoppers' names and notes, and a token is a member of staff's right to them
// for its lifetime only.
func TestAStaffTokensTicketStreamEndsWhenTheTokenExpires(t *testing.T) {
	e := newEnv(t)
	tok, err := e.keys.Issue(auth.Principal{Subject: "barista-9", Role: auth.RoleStaff, Stores: []string{"exp-1"}}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := e.openFeed(e.terminal(overGRPCWeb, tok), "exp-1")
	f.quiet(time.Second) // open, and nothing to send
	if err := f.end(20 * time.Second); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("the stream of an expired staff token ended with %v; want Unauthenticated", err)
	}
}

// ListTerminals pages: every terminal of a store once, oldest first, however the pages fall;
// a bad page size or token is refused naming the field.
func TestListTerminalsPagesThroughEveryTerminalOnce(t *testing.T) {
	e := newEnv(t)
	var want []string
	for i := range 7 {
		id, _ := e.register(fmt.Sprintf("Till %d", i), "page-1")
		want = append(want, id)
	}
	e.register("Elsewhere", "page-2")
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 7 {
			t.Fatalf("still paging after %d pages: %v", pages, got)
		}
		res, err := e.admin().ListTerminals(context.Background(), req(&posv1.ListTerminalsRequest{StoreId: "page-1", PageSize: 3, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		for _, term := range res.Msg.GetTerminals() {
			got = append(got, term.GetId())
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged terminals %v; want %v, in the order registered", got, want)
	}
	for field, bad := range map[string]*posv1.ListTerminalsRequest{
		"page_size":  {PageSize: -1},
		"page_token": {PageToken: "not-a-token"},
	} {
		if _, err := e.admin().ListTerminals(context.Background(), req(bad)); codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), field) {
			t.Errorf("ListTerminals with a bad %s: %v; want InvalidArgument naming it", field, err)
		}
	}
}

// Made-up credentials cost a lookup each: an address presenting many is limited
// (ResourceExhausted with a delay) before its next one is looked at, while a terminal's working
// credential is never charged.
func TestAnAddressMakingUpCredentialsIsLimited(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "auth-lim-1")
	good := e.terminal(overGRPCWeb, cred)
	for range 100 { // working credentials, many more than the refusals allowed: never charged
		if _, err := good.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: "auth-lim-1", TicketId: uuid.NewString()})); codeOf(err) == connect.CodeResourceExhausted {
			t.Fatalf("a working credential was limited: %v", err)
		}
	}
	var limited error
	for i := range 200 {
		made := fmt.Sprintf("hot_trm%05d_%064d", i, i)
		_, err := e.terminal(overGRPCWeb, made).AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: "auth-lim-1", TicketId: uuid.NewString()}))
		if codeOf(err) == connect.CodeResourceExhausted {
			limited = err
			break
		}
		if codeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("made-up credential %d: %v; want Unauthenticated", i, err)
		}
	}
	if limited == nil || !strings.Contains(limited.Error(), "retry in") {
		t.Fatalf("200 made-up credentials from one address were all looked at (%v); want the address limited", limited)
	}
}

// Made-up credentials from a store's address (its terminals share one behind NAT) do not lock
// its working terminals and staff out: while the address is over its refusals, a credential
// seen working before is still let through, read again once its cached row is old (the
// cache's TTL is 1 s here, so both happen; and with the cache off, every call), and so is a
// signed token; a new made-up credential is still refused unread.
func TestMadeUpCredentialsDoNotLockOutTheStoresTerminals(t *testing.T) {
	for _, c := range []struct {
		name string
		ttl  time.Duration
	}{{"cached for 1s", 0}, {"cache off", -1}} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, withConfig(func(cfg *posadapter.Config) { cfg.CredentialCacheTTL = c.ttl }))
			madeUpCredentialsFromAStore(t, e)
		})
	}
}

func madeUpCredentialsFromAStore(t *testing.T, e *env) {
	_, cred := e.register("Counter", "auth-lim-2")
	good := e.terminal(overGRPCWeb, cred)
	staff := e.terminal(overGRPCWeb, e.token(auth.Principal{Subject: "barista-2", Role: auth.RoleStaff, Stores: []string{"auth-lim-2"}}))
	ack := func(c posv1connect.TerminalServiceClient) error {
		_, err := c.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: "auth-lim-2", TicketId: uuid.NewString()}))
		return err
	}
	if err := ack(good); codeOf(err) == connect.CodeResourceExhausted || codeOf(err) == connect.CodeUnauthenticated {
		t.Fatalf("the terminal's first call: %v", err)
	}
	madeUp := func(i int) error {
		return ack(e.terminal(overGRPCWeb, fmt.Sprintf("hot_trm%05d_%064d", i, i)))
	}
	limited := false
	for i := range 200 {
		if codeOf(madeUp(i)) == connect.CodeResourceExhausted {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("200 made-up credentials from one address were all looked at; want the address limited")
	}
	// The made-up credentials go on, 20 a second, while the terminal and a barista work.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 1000; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			_ = madeUp(i)
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 25 { // 2.5 s: the terminal's cached row goes old at least twice
		time.Sleep(100 * time.Millisecond)
		for who, c := range map[string]posv1connect.TerminalServiceClient{"the terminal": good, "a barista's token": staff} {
			if err := ack(c); codeOf(err) == connect.CodeResourceExhausted || codeOf(err) == connect.CodeUnauthenticated {
				t.Fatalf("call %d from %s at the address making up credentials: %v", i, who, err)
			}
		}
	}
	// The address is still limited: new made-up credentials are refused unread. Sent back to
	// back, since the flood's pace on a loaded machine may let a token or two refill.
	var last error
	for i := range 20 {
		if last = madeUp(5000 + i); codeOf(last) == connect.CodeResourceExhausted {
			return
		}
	}
	t.Fatalf("20 new made-up credentials during the flood were all looked at (the last: %v); want ResourceExhausted, unread", last)
}

// Stores' terminals reaching the adapter through a load balancer each keep their own
// refused-credential allowance when the balancer is trusted: one store making up credentials
// does not get every other store's terminals refused unread.
func TestTerminalsBehindATrustedProxyAreLimitedByTheirOwnAddress(t *testing.T) {
	e := newEnv(t, withConfig(func(cfg *posadapter.Config) {
		cfg.TrustedProxies = []net.IPNet{{IP: net.IPv4(127, 0, 0, 0), Mask: net.CIDRMask(8, 32)}}
	}))
	// madeUp presents a made-up credential from a store whose address the balancer saw as from.
	madeUp := func(i int, from string) error {
		c := posv1connect.NewTerminalServiceClient(e.http1, e.base, connect.WithGRPCWeb(), connect.WithInterceptors(bearer(fmt.Sprintf("hot_trm%05d_%064d", i, i)), forwardedFor(from)))
		_, err := c.AckTicket(context.Background(), req(&posv1.AckTicketRequest{StoreId: "auth-lim-3", TicketId: uuid.NewString()}))
		return err
	}
	limited := false
	for i := range 200 {
		if codeOf(madeUp(i, "203.0.113.1")) == connect.CodeResourceExhausted {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("200 made-up credentials from one store were all looked at; want its address limited")
	}
	// The limit refills (10 a second): a call now and then may find a token back. Taken for
	// the address it wrote, a fresh one, none of these would be limited (its burst is 50).
	limitedCalls := 0
	for i := range 20 {
		if codeOf(madeUp(1000+i, "192.0.2.66, 203.0.113.1")) == connect.CodeResourceExhausted {
			limitedCalls++
		}
	}
	if limitedCalls == 0 {
		t.Fatal("the limited store writing another address before the balancer's: none of 20 calls limited; want it still limited by the balancer's")
	}
	if err := madeUp(2000, "203.0.113.2"); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("a made-up credential from another store: %v; want it looked at and refused, Unauthenticated", err)
	}
}

// forwardedFor sets X-Forwarded-For on every unary call, as a load balancer in front would.
func forwardedFor(addr string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
			r.Header().Set("X-Forwarded-For", addr)
			return next(ctx, r)
		}
	}
}
