package edge

import (
	"errors"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ConnectError turns a backend's gRPC status into the same Connect error for an edge's client:
// code, message and details (field violations and the like) reach the client unchanged. An
// error that carries no status is an internal failure and is hidden behind "internal error";
// log it before calling this.
func ConnectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	st, ok := status.FromError(err)
	if !ok {
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	msg := st.Message()
	if st.Code() == codes.Unavailable && transportFailure(msg) || strings.HasPrefix(msg, natsrpcPrefix) {
		// The gRPC client's own words about a backend it cannot reach name internal addresses
		// ("dial tcp 10.0.3.7:9101: connect: connection refused"), and a service's NATS client
		// names internal subjects and NATS's errors: not for the edge's callers.
		msg = plumbingMessage(st.Code())
	}
	out := connect.NewError(connect.Code(st.Code()), errors.New(msg))
	for _, d := range st.Details() {
		msg, ok := d.(proto.Message)
		if !ok {
			continue
		}
		if detail, err := connect.NewErrorDetail(msg); err == nil {
			out.AddDetail(detail)
		}
	}
	return out
}

// natsrpcPrefix starts the messages of the statuses a service's NATS client makes itself (package
// natsrpc), about its call rather than from the service it called.
const natsrpcPrefix = "natsrpc: "

// plumbingMessage stands in for the transport's own words about a call that failed with code.
func plumbingMessage(code codes.Code) string {
	switch code {
	case codes.Unavailable:
		return "the service is unavailable; retry in a moment"
	case codes.DeadlineExceeded:
		return "the service did not answer before the deadline"
	case codes.Canceled:
		return "the call was canceled"
	default:
		return "internal error"
	}
}

// transportFailure reports whether an Unavailable status's message is the gRPC client's own,
// about its connection, rather than a service's.
func transportFailure(msg string) bool {
	for _, s := range []string{"connection error", "transport", "error reading from server", "name resolver", "dial "} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
