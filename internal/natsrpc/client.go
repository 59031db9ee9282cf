package natsrpc

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/tracing"
)

// Call sends req to subject and decodes the answer into res. Every error it
// returns is a gRPC status error, so callers map it to their own API in one
// place (status.Code(err)):
//
//   - the handler's status.Error comes back identical: code, message, details;
//   - nobody serves subject → Unavailable;
//   - ctx's deadline passes first → DeadlineExceeded; ctx canceled → Canceled;
//   - connection trouble → Unavailable (safe to retry);
//   - a request or a reply bigger than the NATS max payload → ResourceExhausted (not sent, or
//     handled with its answer lost: retrying the same request cannot succeed);
//   - a response that does not decode → Internal.
//
// ctx's deadline travels to the handler; without one the call gets
// [DefaultTimeout].
func Call(ctx context.Context, nc *nats.Conn, subject string, req, res proto.Message) (err error) {
	start := time.Now()
	defer func() {
		rpcRequests.WithLabelValues(sideClient, subject, codeName(status.Code(err))).Inc()
		rpcDuration.WithLabelValues(sideClient, subject).Observe(time.Since(start).Seconds())
	}()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return status.Errorf(codes.DeadlineExceeded, "natsrpc: %s: deadline passed before the call", subject)
	}
	data, err := proto.Marshal(req)
	if err != nil {
		return status.Errorf(codes.Internal, "natsrpc: %s: marshal request: %v", subject, err)
	}
	msg := &nats.Msg{
		Subject: subject,
		Data:    data,
		Header: nats.Header{
			// Round up so that a sub-millisecond budget is not sent as 0.
			TimeoutHeader:  []string{strconv.FormatInt(int64((remaining+time.Millisecond-1)/time.Millisecond), 10)},
			DeadlineHeader: []string{strconv.FormatInt(deadline.UnixMilli(), 10)},
		},
	}
	ctx, span := tracing.StartRequest(ctx, subject, msg.Header)
	defer func() { tracing.End(span, err) }()
	reply, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return transportStatus(subject, err, len(data), nc.MaxPayload())
	}
	if reply.Header.Get(micro.ErrorCodeHeader) != "" {
		return replyStatus(reply).Err()
	}
	if err := proto.Unmarshal(reply.Data, res); err != nil {
		return status.Errorf(codes.Internal, "natsrpc: %s: malformed %s response: %v", subject, res.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// ErrNotSent matches (errors.Is) the error of a call whose request never left this process: too
// big to send, so nothing was done. A ResourceExhausted without it is a reply too big to come
// back, of a request that was handled.
var ErrNotSent = errors.New("natsrpc: request not sent")

// notSent is a call's status error that also matches ErrNotSent.
type notSent struct{ st *status.Status }

func (e notSent) Error() string              { return e.st.Err().Error() }
func (e notSent) GRPCStatus() *status.Status { return e.st }
func (e notSent) Is(target error) bool       { return target == ErrNotSent }

func transportStatus(subject string, err error, size int, maxPayload int64) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return status.Errorf(codes.Unavailable, "natsrpc: no service answers %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return status.Errorf(codes.DeadlineExceeded, "natsrpc: %s: no answer before the deadline", subject)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "natsrpc: %s: call canceled", subject)
	case errors.Is(err, nats.ErrMaxPayload):
		// Never sendable as it is: Unavailable would have it retried for ever.
		return notSent{status.Newf(codes.ResourceExhausted, "natsrpc: %s: the request of %d bytes exceeds the NATS max payload of %d bytes", subject, size, maxPayload)}
	default:
		return status.Errorf(codes.Unavailable, "natsrpc: %s: %v", subject, err)
	}
}
