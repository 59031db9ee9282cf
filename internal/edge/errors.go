package edge

import (
	"errors"

	"connectrpc.com/connect"
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
	out := connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
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
