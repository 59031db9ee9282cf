package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
)

// RateLimits bound how fast callers may go. Authenticated callers are limited per token role
// and subject; anonymous ones per client address (many shoppers can share a carrier's address, so
// tokens are the fairer key when there is one). An address is an IPv4 address or an IPv6 /64,
// and its /48 is limited too (edge.AddressLimiter).
type RateLimits struct {
	PerCaller       float64 // calls/s per caller: a token's role and subject
	PerCallerBurst  int
	PerAddress      float64 // calls/s per client IP, anonymous calls
	PerAddressBurst int
	Checkout        float64 // checkouts/s per customer
	CheckoutBurst   int
	OpenStreams     int // streams (WatchOrder) open at once per caller (role and subject); 0: the default
}

// DefaultRateLimits suit shoppers using an app; load tests raise them.
func DefaultRateLimits() RateLimits {
	return RateLimits{PerCaller: 20, PerCallerBurst: 40, PerAddress: 50, PerAddressBurst: 100, Checkout: 1, CheckoutBurst: 5, OpenStreams: 16}
}

// defaultUnaryDeadline caps every unary call (a client may ask for less, not more), so a stuck
// backend never holds a connection forever.
const defaultUnaryDeadline = 30 * time.Second

// admission authorizes and rate-limits every call at the edge, then forwards the caller's token
// so the service verifies it again (the service is the one that decides what is theirs).
type admission struct {
	keys      *auth.KeySet
	policy    auth.Policy
	perCaller *edge.Limiter
	perAddr   *edge.AddressLimiter
	checkout  *edge.Limiter
	streams   *edge.StreamLimit
	draining  context.Context // done when the gateway shuts down: streams end
}

func newAdmission(keys *auth.KeySet, l RateLimits) *admission {
	if l.OpenStreams <= 0 {
		l.OpenStreams = DefaultRateLimits().OpenStreams
	}
	return &admission{
		keys:      keys,
		policy:    auth.DefaultPolicy(),
		perCaller: edge.NewLimiter(l.PerCaller, l.PerCallerBurst),
		perAddr:   edge.NewAddressLimiter(l.PerAddress, l.PerAddressBurst),
		checkout:  edge.NewLimiter(l.Checkout, l.CheckoutBurst),
		streams:   edge.NewStreamLimit(l.OpenStreams, "with this token"),
	}
}

func (a *admission) admit(ctx context.Context, procedure string, header http.Header, peerAddr string) (context.Context, error) {
	authorization := header.Get("Authorization")
	waiting, cancel := ctx, context.CancelFunc(func() {})
	if a.keys.TrustsProvider() {
		// The wait for an identity provider's new key is bounded by the call's own timeout,
		// which Connect applies only once the call is admitted.
		waiting, cancel = edge.CallerTimeout(ctx, header)
	}
	principal, ok, err := a.policy.Authorize(waiting, a.keys, procedure, authorization)
	cancel()
	if err != nil {
		// A refused token has no subject to count against: its address pays, so that a flood
		// of bad tokens is refused at the address's limit. Each is still checked first (an
		// HMAC, a microsecond or so, over a header of at most 64 KB): the address's allowance
		// is not spent by its valid callers, which may be many behind one NAT.
		if allowed, wait := a.perAddr.Allow(peerAddr); !allowed {
			return ctx, edge.RateLimited("calls from this address", wait)
		}
		st := status.Convert(err)
		return ctx, connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
	}
	if !ok {
		if allowed, wait := a.perAddr.Allow(peerAddr); !allowed {
			return ctx, edge.RateLimited("calls from this address", wait)
		}
		return ctx, nil
	}
	// Keyed by role and subject: a staff member and a customer may have the same id in their
	// systems, and neither may spend the other's allowance.
	caller := string(principal.Role) + ":" + principal.Subject
	if allowed, wait := a.perCaller.Allow(caller); !allowed {
		return ctx, edge.RateLimited("calls with this token", wait)
	}
	if procedure == cartv1connect.CartServiceCheckoutProcedure {
		if allowed, wait := a.checkout.Allow(caller); !allowed {
			return ctx, edge.RateLimited("checkouts", wait)
		}
	}
	return auth.OutgoingContext(auth.NewContext(ctx, principal), authorization), nil
}

// admitOnce admits a call unless edge.AdmitBeforeBody has.
func (a *admission) admitOnce(ctx context.Context, procedure string, header http.Header, peerAddr string) (context.Context, error) {
	if edge.Admitted(ctx) {
		return ctx, nil
	}
	return a.admit(ctx, procedure, header, peerAddr)
}

// interceptor applies admission to unary and streaming handlers.
func (a *admission) interceptor() connect.Interceptor { return admissionInterceptor{a} }

type admissionInterceptor struct{ a *admission }

func (i admissionInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := i.a.admitOnce(ctx, req.Spec().Procedure, req.Header(), req.Peer().Addr)
		if err != nil {
			return nil, err
		}
		// Whatever the client asked for (WithTimeout keeps an earlier deadline): a client asking
		// for thirty days must not hold a backend call and its connection that long either.
		ctx, cancel := context.WithTimeout(ctx, defaultUnaryDeadline)
		defer cancel()
		return next(ctx, req)
	}
}

func (i admissionInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// errDraining ends streams when the gateway shuts down.
var errDraining = errors.New("the gateway is shutting down")

// WrapStreamingHandler admits a stream, counts it against its caller's open streams, and ends
// it when the caller's token expires or the gateway shuts down (as Unavailable: the client
// watches again).
func (i admissionInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.a.admitOnce(ctx, conn.Spec().Procedure, conn.RequestHeader(), conn.Peer().Addr)
		if err != nil {
			return err
		}
		if i.a.draining != nil {
			var cancel context.CancelCauseFunc
			ctx, cancel = context.WithCancelCause(ctx)
			defer cancel(nil)
			defer context.AfterFunc(i.a.draining, func() {
				cancel(errDraining)
				edge.WriteControlOf(ctx).CutLater() // a send stuck on a client that reads nothing
			})()
		}
		var expires time.Time // anonymous: no token to expire
		if p, ok := auth.FromContext(ctx); ok {
			done, err := i.a.streams.Open(string(p.Role) + ":" + p.Subject)
			if err != nil {
				return err
			}
			defer done()
			expires = p.Expires
		}
		err = edge.UntilExpiry(ctx, expires, func(ctx context.Context) error { return next(ctx, conn) })
		if errors.Is(context.Cause(ctx), errDraining) {
			return connect.NewError(connect.CodeUnavailable, edge.Restarting("the gateway is restarting: open the stream again"))
		}
		return err
	}
}
