package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// fakePOS is a pos-adapter whose first RegisterTerminal hangs until its caller gives up (tells
// arrived first); later ones register. Its feeds stay open and send nothing.
type fakePOS struct {
	posv1connect.UnimplementedTerminalAdminServiceHandler
	posv1connect.UnimplementedTerminalServiceHandler
	registrations atomic.Int64
	arrived       chan struct{}
	feeds         atomic.Int64
}

func (p *fakePOS) RegisterTerminal(ctx context.Context, req *connect.Request[posv1.RegisterTerminalRequest]) (*connect.Response[posv1.RegisterTerminalResponse], error) {
	if p.registrations.Add(1) == 1 {
		close(p.arrived)
		<-ctx.Done()
		return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	return connect.NewResponse(&posv1.RegisterTerminalResponse{Terminal: &posv1.Terminal{Id: "term-1"}, Credential: "secret"}), nil
}

func (p *fakePOS) StreamTickets(ctx context.Context, _ *connect.Request[posv1.StreamTicketsRequest], _ *connect.ServerStream[posv1.StreamTicketsResponse]) error {
	p.feeds.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

// A store's terminal is registered the first time an order needs it, on that order's context.
// A registration cut off there (the order timed out, the run was interrupted) is not the
// store's answer: the next order's call registers it. It was kept (a sync.Once holding the
// error), leaving the store without a terminal, its tickets unseen, for the rest of the run.
func TestATerminalRegistrationCutOffIsTriedAgain(t *testing.T) {
	pos := &fakePOS{arrived: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle(posv1connect.NewTerminalAdminServiceHandler(pos))
	mux.Handle(posv1connect.NewTerminalServiceHandler(pos))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r := &run{cfg: Config{HTTPClient: shopper.HTTPClient(8), Endpoints: system.Endpoints{POSURL: srv.URL}, Logf: t.Logf},
		prefix: "load-test-", errors: map[string]uint64{}}
	f := newFleet(r, "admin-token")
	defer f.stop()

	ctx, cancel := context.WithCancel(t.Context())
	failed := make(chan error, 1)
	go func() {
		_, err := f.terminal(ctx, "st-1")
		failed <- err
	}()
	<-pos.arrived
	cancel()
	if err := <-failed; err == nil {
		t.Fatal("a registration whose context ended succeeded")
	}
	term, err := f.terminal(t.Context(), "st-1")
	if err != nil || term == nil || term.ID != "term-1" {
		t.Fatalf("after one registration cut off, the next call: %v, %v; want the store's terminal registered", term, err)
	}
	if again, err := f.terminal(t.Context(), "st-1"); err != nil || again != term {
		t.Errorf("a third call: %v, %v; want the terminal registered, not another", again, err)
	}
	for deadline := time.Now().Add(5 * time.Second); pos.feeds.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n, feeds := pos.registrations.Load(), pos.feeds.Load(); n != 2 || feeds != 1 {
		t.Errorf("%d registrations, %d feeds followed; want 2 (the one cut off, then the store's) and 1", n, feeds)
	}
}
