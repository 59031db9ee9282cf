package posadapter

import (
	"context"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// terminalAPI is TerminalService. Every method checks the request's store against the caller
// first (forStore), then does its work or forwards it.
type terminalAPI struct {
	posv1connect.UnimplementedTerminalServiceHandler
	a *Adapter
}

func (api terminalAPI) StreamTickets(ctx context.Context, req *connect.Request[posv1.StreamTicketsRequest], stream *connect.ServerStream[posv1.StreamTicketsResponse]) error {
	return api.a.streamTickets(ctx, req.Msg.GetStoreId(), stream)
}

func (api terminalAPI) AckTicket(ctx context.Context, req *connect.Request[posv1.AckTicketRequest]) (*connect.Response[posv1.AckTicketResponse], error) {
	if err := api.a.ackTicket(ctx, req.Msg.GetStoreId(), req.Msg.GetTicketId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.AckTicketResponse{}), nil
}

func (api terminalAPI) ListStoreOrders(ctx context.Context, req *connect.Request[posv1.ListStoreOrdersRequest]) (*connect.Response[posv1.ListStoreOrdersResponse], error) {
	m := req.Msg
	res, err := staffCall(ctx, api.a, m.GetStoreId(), &fulfilmentv1.ListStoreOrdersRequest{
		StoreId: m.GetStoreId(), States: m.GetStates(), PageSize: m.GetPageSize(), PageToken: m.GetPageToken(),
	}, api.a.fulfilment.ListStoreOrders)
	if err != nil {
		return nil, err
	}
	out := &posv1.ListStoreOrdersResponse{NextPageToken: res.GetNextPageToken()}
	for _, o := range res.GetOrders() {
		out.Orders = append(out.Orders, staffView(o))
	}
	return connect.NewResponse(out), nil
}

func (api terminalAPI) AcceptOrder(ctx context.Context, req *connect.Request[posv1.AcceptOrderRequest]) (*connect.Response[posv1.AcceptOrderResponse], error) {
	m := req.Msg
	res, err := staffCall(ctx, api.a, m.GetStoreId(), &fulfilmentv1.AcceptOrderRequest{StoreId: m.GetStoreId(), OrderId: m.GetOrderId()},
		api.a.fulfilment.AcceptOrder)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.AcceptOrderResponse{Order: staffView(res.GetOrder())}), nil
}

func (api terminalAPI) MarkLineUnavailable(ctx context.Context, req *connect.Request[posv1.MarkLineUnavailableRequest]) (*connect.Response[posv1.MarkLineUnavailableResponse], error) {
	m := req.Msg
	res, err := staffCall(ctx, api.a, m.GetStoreId(), &fulfilmentv1.MarkLineUnavailableRequest{
		StoreId: m.GetStoreId(), OrderId: m.GetOrderId(), LineId: m.GetLineId(), Reason: m.GetReason(),
	}, api.a.fulfilment.MarkLineUnavailable)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.MarkLineUnavailableResponse{Order: staffView(res.GetOrder())}), nil
}

func (api terminalAPI) MarkReady(ctx context.Context, req *connect.Request[posv1.MarkReadyRequest]) (*connect.Response[posv1.MarkReadyResponse], error) {
	m := req.Msg
	res, err := staffCall(ctx, api.a, m.GetStoreId(), &fulfilmentv1.MarkReadyRequest{StoreId: m.GetStoreId(), OrderId: m.GetOrderId()},
		api.a.fulfilment.MarkReady)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.MarkReadyResponse{Order: staffView(res.GetOrder())}), nil
}

// HandOver forwards the pickup code to fulfilment, which checks it, counts wrong ones and
// locks hand-over for the order after too many (its pickup_locked event becomes a
// PICKUP_LOCKED ticket on every terminal of the store).
func (api terminalAPI) HandOver(ctx context.Context, req *connect.Request[posv1.HandOverRequest]) (*connect.Response[posv1.HandOverResponse], error) {
	m := req.Msg
	// Hand-overs that fail (a wrong code, an order that is not there) are charged to the caller;
	// a busy counter handing over order after order, several at once, is never slowed. Once
	// the caller has refusals to pay off, attempts under way count against what it has left,
	// so guesses sent all at once get no more tries than guesses sent one by one. A guess the
	// caller gave up on (canceled, past its deadline) is charged like a refusal: fulfilment
	// decides a change whose batch had begun whatever its caller does, so it may have been
	// judged, and a guesser must not learn codes by abandoning its calls. The server's own
	// failures (fulfilment unavailable) are not the caller's to pay for.
	c, known := callerFrom(ctx)
	done := func(bool) {}
	if known {
		var ok bool
		var wait time.Duration
		if done, ok, wait = api.a.handOvers.Attempt(c.actor()); !ok {
			return nil, edge.RateLimited("refused pickup-code attempts", wait)
		}
	}
	res, err := staffCall(ctx, api.a, m.GetStoreId(), &fulfilmentv1.HandOverRequest{
		StoreId: m.GetStoreId(), OrderId: m.GetOrderId(), PickupCode: m.GetPickupCode(),
	}, api.a.fulfilment.HandOver)
	done(err != nil && slices.Contains([]connect.Code{connect.CodePermissionDenied, connect.CodeNotFound,
		connect.CodeFailedPrecondition, connect.CodeResourceExhausted, connect.CodeInvalidArgument,
		connect.CodeCanceled, connect.CodeDeadlineExceeded}, connect.CodeOf(err)))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.HandOverResponse{Order: staffView(res.GetOrder())}), nil
}

func (api terminalAPI) CancelOrder(ctx context.Context, req *connect.Request[posv1.CancelOrderRequest]) (*connect.Response[posv1.CancelOrderResponse], error) {
	m := req.Msg
	res, err := staffCall(ctx, api.a, m.GetStoreId(), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{
		StoreId: m.GetStoreId(), OrderId: m.GetOrderId(), Reason: m.GetReason(),
	}, api.a.fulfilment.CancelOrder)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.CancelOrderResponse{Order: staffView(res.GetOrder())}), nil
}

// defaultPauseReason is shown to shoppers when staff pause without saying why.
const defaultPauseReason = "This store is not taking mobile orders right now"

func (api terminalAPI) PauseStore(ctx context.Context, req *connect.Request[posv1.PauseStoreRequest]) (*connect.Response[posv1.PauseStoreResponse], error) {
	reason := req.Msg.GetReason()
	if reason == "" {
		reason = defaultPauseReason
	}
	store, err := api.a.setStoreState(ctx, req.Msg.GetStoreId(), inventoryv1.StoreState_STORE_STATE_PAUSED, reason)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.PauseStoreResponse{Store: store}), nil
}

func (api terminalAPI) ResumeStore(ctx context.Context, req *connect.Request[posv1.ResumeStoreRequest]) (*connect.Response[posv1.ResumeStoreResponse], error) {
	store, err := api.a.setStoreState(ctx, req.Msg.GetStoreId(), inventoryv1.StoreState_STORE_STATE_OPEN, "")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&posv1.ResumeStoreResponse{Store: store}), nil
}

// setStoreState pauses or resumes a store at inventory, which then refuses checkouts to it
// (with its reason) and leaves it out of the locator. Staff move a store only between OPEN and
// PAUSED: a store an operator CLOSED stays closed. The change names the version the check read,
// so an operator's close landing in between is not undone; it is then checked again.
func (a *Adapter) setStoreState(ctx context.Context, storeID string, state inventoryv1.StoreState, reason string) (*inventoryv1.Store, error) {
	c, err := a.forStore(ctx, storeID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	actx, err := a.adminContext(ctx, c.actor())
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		cur, err := a.locator.GetStore(ctx, &inventoryv1.GetStoreRequest{StoreId: storeID})
		if err != nil {
			return nil, edge.ConnectError(err)
		}
		if cur.GetStore().GetState() == inventoryv1.StoreState_STORE_STATE_CLOSED {
			return nil, a.fail(ctx, "", rpcerr.FailedPrecondition("store %s is CLOSED by an operator; staff can pause or resume only an open store", storeID))
		}
		res, err := a.inventory.SetStoreState(actx, &inventoryv1.SetStoreStateRequest{
			StoreId: storeID, State: state, Reason: reason, ExpectedVersion: cur.GetStore().GetVersion(),
		})
		if status.Code(err) == codes.Aborted && attempt < storeStateAttempts {
			continue // changed since it was read: look again
		}
		if err != nil {
			return nil, edge.ConnectError(err)
		}
		a.log.InfoContext(ctx, "store state set by staff", "store_id", storeID, "state", state, "by", c.principal.Actor())
		return res.GetStore(), nil
	}
}

// storeStateAttempts bounds the reads and changes of one pause or resume that others' changes
// to the store keep overtaking.
const storeStateAttempts = 3

// staffCall checks the store, then forwards req to fulfilment as the caller (see staffContext)
// and passes fulfilment's refusal through unchanged.
func staffCall[Req, Res any](ctx context.Context, a *Adapter, storeID string, req *Req, call func(context.Context, *Req, ...grpc.CallOption) (*Res, error)) (*Res, error) {
	c, err := a.forStore(ctx, storeID)
	if err != nil {
		return nil, err
	}
	ctx, err = a.staffContext(ctx, c, storeID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	res, err := call(ctx, req)
	if err != nil {
		return nil, edge.ConnectError(err)
	}
	return res, nil
}

// callContext bounds a forwarded call that has no deadline of its own.
func (a *Adapter) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, a.cfg.CallTimeout)
}
