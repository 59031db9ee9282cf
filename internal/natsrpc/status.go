package natsrpc

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// internalMessage is what a caller sees when a handler fails with an error
// that is not a gRPC status: the real error may name tables or hosts, so it
// goes to the service's log, not over the wire.
const internalMessage = "internal error"

// serverStatus turns a handler's error into the status sent back, and reports
// whether the real error must be logged because the caller won't see it.
func serverStatus(err error) (st *status.Status, hidden bool) {
	if s, ok := status.FromError(err); ok {
		return s, false
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded while handling the request"), false
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled"), false
	}
	return status.New(codes.Internal, internalMessage), true
}

// errorReply builds st as a micro error reply (see the package doc): micro's error headers, the
// code's name, and the google.rpc.Status as the body.
func errorReply(st *status.Status) *nats.Msg {
	body, err := proto.Marshal(st.Proto())
	if err != nil {
		// Only an unmarshalable detail gets here; keep code and message.
		body, _ = proto.Marshal(&spb.Status{Code: int32(st.Code()), Message: st.Message()})
	}
	return &nats.Msg{
		Header: nats.Header{
			micro.ErrorHeader:     []string{headerSafe(st.Message(), st.Code().String())},
			micro.ErrorCodeHeader: []string{strconv.Itoa(int(st.Code()))},
			CodeNameHeader:        []string{codeName(st.Code())},
		},
		Data: body,
	}
}

// replyStatus rebuilds the status of an error reply. A body that is a
// google.rpc.Status wins (it carries the details); a reply from a micro
// service that is not Handoff's falls back to the headers.
func replyStatus(m *nats.Msg) *status.Status {
	codeText := m.Header.Get(micro.ErrorCodeHeader)
	if len(m.Data) > 0 {
		var sp spb.Status
		if err := proto.Unmarshal(m.Data, &sp); err == nil && strconv.Itoa(int(sp.GetCode())) == codeText {
			return status.FromProto(&sp)
		}
	}
	code := codes.Unknown
	if n, err := strconv.ParseUint(codeText, 10, 32); err == nil && n <= uint64(codes.Unauthenticated) {
		code = codes.Code(n)
	}
	return status.New(code, m.Header.Get(micro.ErrorHeader))
}

// headerSafe makes a message usable as a NATS header value (one line, bounded),
// falling back when empty because micro requires a description. The body
// still carries the exact message.
func headerSafe(msg, fallback string) string {
	if msg == "" {
		return fallback
	}
	const max = 512
	if len(msg) > max {
		msg = msg[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
}

// codeName spells a code like the gRPC wire protocol and google.rpc.Code do
// (NOT_FOUND), not like Go's String method (NotFound).
func codeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return "CODE_" + strconv.Itoa(int(c))
}

var codeNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// callFailurePrefix starts the message of every status the client makes itself about its call
// (no service answered, none in time, the connection), as opposed to one the service sent.
const callFailurePrefix = "natsrpc: "

// Message is err's status message as it may be shown further on, to a shopper or in an order's
// history: a failure of the call itself is told in plain words for its code, since the client's
// own message names an internal subject and NATS's error.
func Message(err error) string {
	st := status.Convert(err)
	if !strings.HasPrefix(st.Message(), callFailurePrefix) {
		return st.Message()
	}
	switch st.Code() {
	case codes.Unavailable:
		return "the service did not answer"
	case codes.DeadlineExceeded:
		return "the service did not answer in time"
	case codes.Canceled:
		return "the call was canceled"
	default:
		return "internal error"
	}
}
