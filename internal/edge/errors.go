package edge

import (
	"errors"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/natsrpc"
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
	// A service's NATS client's own words about a failed call name internal subjects and NATS's
	// errors, and the gRPC client's about a backend it cannot reach name internal addresses
	// ("dial tcp 10.0.3.7:9101: connect: connection refused"): not for the edge's callers.
	msg := natsrpc.Message(err)
	if st.Code() == codes.Unavailable && transportFailure(msg) {
		msg = "the service is unavailable; retry in a moment"
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
