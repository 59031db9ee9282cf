package natsrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/pgtext"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/tracing"
	"github.com/handoff-dev/handoff/internal/utf8field"
)

// Service is a micro service (discovery, stats, Stop) that knows the logger its
// endpoints report to.
type Service struct {
	micro.Service
	nc     *nats.Conn
	logger *slog.Logger
	slots  chan struct{} // bounds the requests this process handles at once

	mu       sync.Mutex
	inflight int           // requests being handled
	stopping bool          // Shutdown has begun: requests are refused
	idle     chan struct{} // closed when stopping and nothing is in flight
}

// MaxConcurrent is how many requests one process handles at once across a service's endpoints.
const MaxConcurrent = 256

// AddService registers a micro service on nc. name is the service's name
// (catalog, inventory, ...), version a SemVer string. Every copy of a service
// registers the same name; micro's queue group makes them share requests.
// A nil logger discards.
func AddService(nc *nats.Conn, name, version, description string, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        name,
		Version:     version,
		Description: description,
		ErrorHandler: func(s micro.Service, err *micro.NATSError) {
			// Slow consumer and similar: the service keeps running.
			logger.Error("natsrpc: service subscription error", "service", name, "subject", err.Subject, "err", err.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("natsrpc: add service %s: %w", name, err)
	}
	s := &Service{Service: svc, nc: nc, logger: logger.With("service", name), slots: make(chan struct{}, MaxConcurrent), idle: make(chan struct{})}
	if err := s.flush(); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return s, nil
}

// Handle registers h as the endpoint for subject (see [Subject]). The request
// and response types are inferred from h, so a call site is one line:
//
//	natsrpc.Handle(svc, natsrpc.Subject("catalog", "get_skus"), s.GetSKUs)
//
// h's context carries the caller's deadline. h returns a status.Error to send
// a gRPC code and details; any other error reaches the caller as Internal
// (and is logged). A malformed request is answered with InvalidArgument
// without calling h; a panic in h is answered with Internal and logged, and
// the service keeps serving.
func Handle[Req, Res any, PReq interface {
	*Req
	proto.Message
}, PRes interface {
	*Res
	proto.Message
}](svc *Service, subject string, h func(ctx context.Context, req PReq) (PRes, error)) error {
	name, err := endpointName(subject)
	if err != nil {
		return err
	}
	serve := func(ctx context.Context, data []byte) ([]byte, *status.Status) {
		req := PReq(new(Req))
		if err := proto.Unmarshal(data, req); err != nil {
			if path, ok := utf8field.Of(data, req.ProtoReflect().Descriptor(), err); ok {
				return nil, status.Convert(rpcerr.Invalid(path, utf8field.Problem))
			}
			return nil, status.Newf(codes.InvalidArgument, "malformed %s request: %v", req.ProtoReflect().Descriptor().FullName(), err)
		}
		// A NUL in any string is a zero byte on the wire: most requests have none, and skip
		// the walk.
		if bytes.IndexByte(data, 0) >= 0 {
			if err := pgtext.Check(req); err != nil {
				return nil, status.Convert(err)
			}
		}
		res, err := h(ctx, req)
		if err != nil {
			st, hidden := serverStatus(err)
			if hidden {
				svc.logger.ErrorContext(ctx, "natsrpc: handler failed", "subject", subject, "err", err)
			}
			return nil, st
		}
		body, err := proto.Marshal(res)
		if err != nil {
			svc.logger.ErrorContext(ctx, "natsrpc: marshal response", "subject", subject, "err", err)
			return nil, status.New(codes.Internal, internalMessage)
		}
		return body, nil
	}
	err = svc.AddEndpoint(name, micro.HandlerFunc(func(r micro.Request) {
		// micro calls this from the subscription's one goroutine: hand each request to its own
		// goroutine so that one slow database transaction does not queue every other request.
		// The slots bound the fan-out; when all are taken the subscription waits (back-pressure).
		if !svc.begin() {
			// Delivered before Shutdown unsubscribed: refused as from a stopped service, so
			// the caller retries (another copy, or this one restarted).
			svc.reply(r, subject, nil, status.New(codes.Unavailable, "natsrpc: "+subject+" is shutting down"))
			return
		}
		svc.slots <- struct{}{}
		go func() {
			defer svc.end()
			defer func() { <-svc.slots }()
			svc.serve(r, subject, serve)
		}()
	}), micro.WithEndpointSubject(subject))
	if err != nil {
		return fmt.Errorf("natsrpc: add endpoint %s: %w", subject, err)
	}
	return svc.flush()
}

// begin counts a request in flight, unless Shutdown has begun.
func (svc *Service) begin() bool {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.stopping {
		return false
	}
	svc.inflight++
	return true
}

// end counts a request done.
func (svc *Service) end() {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.inflight--; svc.inflight == 0 && svc.stopping {
		close(svc.idle)
	}
}

// Shutdown stops taking requests (micro's Stop: the endpoints unsubscribe) and waits, until
// ctx ends, for those in flight to be answered, so that what closes after it (the service's
// database pool) is not pulled from under a request half-way, such as an order whose stock is
// reserved and is being written.
func (svc *Service) Shutdown(ctx context.Context) error {
	err := svc.Stop()
	svc.mu.Lock()
	if !svc.stopping {
		svc.stopping = true
		if svc.inflight == 0 {
			close(svc.idle)
		}
	}
	svc.mu.Unlock()
	select {
	case <-svc.idle:
	case <-ctx.Done():
		svc.mu.Lock()
		n := svc.inflight
		svc.mu.Unlock()
		return errors.Join(err, fmt.Errorf("natsrpc: %d requests still in flight at shutdown: %w", n, ctx.Err()))
	}
	return err
}

// flush makes sure the server has the subscriptions, so that an endpoint
// answers as soon as Handle returns (no spurious Unavailable at start).
func (svc *Service) flush() error {
	if err := svc.nc.FlushTimeout(5 * time.Second); err != nil {
		return fmt.Errorf("natsrpc: register with the NATS server: %w", err)
	}
	return nil
}

// serve runs one request: deadline from the header, panic recovery, reply,
// metrics.
func (svc *Service) serve(r micro.Request, subject string, serve func(context.Context, []byte) ([]byte, *status.Status)) {
	start := time.Now()
	st := status.New(codes.OK, "")
	defer func() {
		rpcRequests.WithLabelValues(sideServer, subject, codeName(st.Code())).Inc()
		rpcDuration.WithLabelValues(sideServer, subject).Observe(time.Since(start).Seconds())
	}()

	timeout, err := requestTimeout(r.Headers())
	if err != nil {
		st = status.New(codes.InvalidArgument, err.Error())
		svc.reply(r, subject, nil, st)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if deadline, ok := requestDeadline(r.Headers()); ok {
		if time.Now().After(deadline) {
			st = status.Newf(codes.DeadlineExceeded, "natsrpc: %s: the request waited past its deadline; not handled", subject)
			svc.reply(r, subject, nil, st)
			return
		}
		var cancelAt context.CancelFunc
		ctx, cancelAt = context.WithDeadline(ctx, deadline)
		defer cancelAt()
	}

	ctx, span := tracing.StartHandling(ctx, subject, r.Headers())
	defer func() { tracing.End(span, st.Err()) }()
	var body []byte
	func() {
		defer func() {
			if p := recover(); p != nil {
				svc.logger.ErrorContext(ctx, "natsrpc: handler panicked", "subject", subject, "panic", p, "stack", string(debug.Stack()))
				body, st = nil, status.New(codes.Internal, internalMessage)
			}
		}()
		var hst *status.Status
		body, hst = serve(ctx, r.Data())
		if hst != nil {
			st = hst
		}
	}()
	st = svc.reply(r, subject, body, st)
}

// reply answers r by publishing to its reply subject itself: the request runs in a goroutine of
// its own (see Handle), and micro's Request.Respond records outcomes on the request that micro
// reads, unsynchronised, once its handler has returned. So micro's own stats count requests
// but not errors or time; this package's Prometheus metrics have those.
//
// A reply bigger than the connection's max payload cannot be sent: it is answered instead with
// ResourceExhausted naming its size and the limit, so that the caller learns at once, and for
// certain, that the answer was lost (it must ask for less), rather than time out not knowing
// whether the work was done. It returns the status sent.
func (svc *Service) reply(r micro.Request, subject string, body []byte, st *status.Status) *status.Status {
	msg := &nats.Msg{Data: body}
	if st.Code() != codes.OK {
		msg = errorReply(st)
	}
	msg.Subject = r.Reply()
	if msg.Subject == "" {
		return st // a publish with no reply subject: nobody is waiting
	}
	err := svc.nc.PublishMsg(msg)
	if errors.Is(err, nats.ErrMaxPayload) {
		st = status.Newf(codes.ResourceExhausted, "natsrpc: %s: the reply of %d bytes exceeds the NATS max payload of %d bytes; it was handled, but its answer cannot be sent",
			subject, len(msg.Data)+headerSize(msg.Header), svc.nc.MaxPayload())
		svc.logger.Error("natsrpc: reply too big to send; answered with an error", "subject", subject, "err", st.Message())
		tooBig := errorReply(st)
		tooBig.Subject = msg.Subject
		err = svc.nc.PublishMsg(tooBig)
	}
	if err != nil {
		// The caller times out; nothing else to do but say so.
		svc.logger.Warn("natsrpc: send reply", "subject", subject, "err", err)
	}
	return st
}

// headerSize is about what h adds to a message's size ("Name: value\r\n" per value), which
// counts against the max payload.
func headerSize(h nats.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// requestDeadline reads the caller's deadline from its header, if it sent one (a malformed
// one is ignored: the relative timeout still bounds the request).
func requestDeadline(h micro.Headers) (time.Time, bool) {
	ms, err := strconv.ParseInt(h.Get(DeadlineHeader), 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// requestTimeout reads the caller's budget from the timeout header.
func requestTimeout(h micro.Headers) (time.Duration, error) {
	v := h.Get(TimeoutHeader)
	if v == "" {
		return DefaultTimeout, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return 0, fmt.Errorf("header %s: want a positive number of milliseconds, got %q", TimeoutHeader, v)
	}
	if ms > MaxTimeout.Milliseconds() {
		return MaxTimeout, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// endpointName checks that subject is a concrete subject under SubjectPrefix
// and derives micro's endpoint name from the part after the service token
// (handoff.rpc.inventory.hold.reserve → hold-reserve).
func endpointName(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix+".")
	toks := strings.Split(rest, ".")
	if !ok || len(toks) < 2 {
		return "", fmt.Errorf("natsrpc: subject %q is not %s.<service>.<method>", subject, SubjectPrefix)
	}
	for _, tok := range toks {
		if !validSubjectToken(tok) {
			return "", fmt.Errorf("natsrpc: subject %q has an invalid token %q", subject, tok)
		}
	}
	return strings.Join(toks[1:], "-"), nil
}
