// Package rpcerr builds the gRPC status errors Handoff returns for bad input and broken rules.
//
// Every refusal names what was wrong (the field, the id, the rule) in its message and, for
// invalid arguments, as google.rpc.BadRequest field violations, so that clients can point at
// the offending field and a human can read the message alone. It is the one error mapping:
// services return these from their domain code and the ports pass them through unchanged.
package rpcerr

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Violations collects invalid fields so that one response reports all of them.
type Violations struct {
	list []*errdetails.BadRequest_FieldViolation
	more int // violations past maxViolations, counted only
}

// Add records that field is invalid, with a description like "must be between 1 and 99".
// Past maxViolations, violations are counted, not kept.
func (v *Violations) Add(field, description string) {
	if len(v.list) == maxViolations {
		v.more++
		return
	}
	v.list = append(v.list, &errdetails.BadRequest_FieldViolation{Field: clip(field, maxDescription), Description: clip(description, maxDescription)})
}

// A refusal repeats what it refuses in a bounded space, whatever the request held: input
// echoed whole (a megabyte SKU, each control byte written as four characters by %q) made a
// refusal several times its request, a header too big for HTTP/2 clients and proxies (the
// connection dropped, the call answered Unavailable). Callers cut what they echo (Echo); these
// bounds hold whatever they do.
const (
	maxDescription = 1 << 10 // of a field's name and of its description, in bytes
	maxViolations  = 64      // violations detailed in one refusal
	maxMessage     = 8 << 10 // of a refusal's message, in bytes
)

// clip is s cut to at most n bytes on a character boundary, marked "…" when cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// bounded is a refusal of code with a message, cut to maxMessage.
func bounded(code codes.Code, format string, args ...any) *status.Status {
	return status.New(code, clip(fmt.Sprintf(format, args...), maxMessage))
}

// Addf is Add with a formatted description.
func (v *Violations) Addf(field, format string, args ...any) {
	v.Add(field, fmt.Sprintf(format, args...))
}

// Empty reports whether no violation was recorded.
func (v *Violations) Empty() bool { return len(v.list) == 0 }

// Err returns nil when nothing was recorded, else an InvalidArgument status whose message lists
// every "field: description" and whose details carry them as a BadRequest.
func (v *Violations) Err() error {
	if len(v.list) == 0 {
		return nil
	}
	parts := make([]string, len(v.list), len(v.list)+1)
	for i, fv := range v.list {
		parts[i] = fv.Field + ": " + fv.Description
	}
	if v.more > 0 {
		parts = append(parts, fmt.Sprintf("and %d more", v.more))
	}
	st := status.New(codes.InvalidArgument, clip(strings.Join(parts, "; "), maxMessage))
	if withDetails, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: v.list}); err == nil {
		st = withDetails
	}
	return st.Err()
}

// Invalid is a single-field InvalidArgument.
func Invalid(field, description string) error {
	var v Violations
	v.Add(field, description)
	return v.Err()
}

// NotFound says which kind of thing, with which id, does not exist.
func NotFound(kind, id string) error {
	return bounded(codes.NotFound, "%s %q not found", kind, Echo(id)).Err()
}

// Echo is id as a refusal repeats it: cut after maxEchoedID bytes (on a character boundary).
// No stored id is this long; echoing a megabyte back would only amplify the request (and
// overflow the header a proxy passes on). Bytes, not characters: %q writes a character of four
// bytes as up to ten, and the echo must leave room for the reason around it (maxDescription).
func Echo(id string) string {
	if len(id) > maxEchoedID {
		return clip(id, maxEchoedID+len("…"))
	}
	return id
}

// maxEchoedID bounds the part of an id, or any text, a refusal repeats, in bytes.
const maxEchoedID = 128

// FailedPrecondition refuses an action the current state does not allow.
func FailedPrecondition(format string, args ...any) error {
	return bounded(codes.FailedPrecondition, format, args...).Err()
}

// FailedPreconditionReason is FailedPrecondition with a machine-readable reason: a
// google.rpc.ErrorInfo of domain and reason (an UPPER_SNAKE_CASE constant of the domain's), so
// that a caller decides from it (Reason) rather than from the message, which stays for people
// and may be reworded.
func FailedPreconditionReason(domain, reason, format string, args ...any) error {
	st := bounded(codes.FailedPrecondition, format, args...)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Domain: domain, Reason: reason}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// Reason is the reason of err's google.rpc.ErrorInfo of domain, looking through wrapping; ""
// when it has none.
func Reason(err error, domain string) string {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return ""
	}
	for _, d := range se.GRPCStatus().Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == domain {
			return info.GetReason()
		}
	}
	return ""
}

// Aborted refuses a write made against a stale version (optimistic concurrency).
func Aborted(format string, args ...any) error {
	return bounded(codes.Aborted, format, args...).Err()
}

// AlreadyExists refuses to create what exists.
func AlreadyExists(kind, id string) error {
	return bounded(codes.AlreadyExists, "%s %q already exists", kind, Echo(id)).Err()
}

// PermissionDenied refuses an authenticated caller acting outside its scope.
func PermissionDenied(format string, args ...any) error {
	return bounded(codes.PermissionDenied, format, args...).Err()
}

// Code returns the gRPC code of err (Unknown for plain errors, OK for nil), looking through
// wrapping so that fmt.Errorf("...: %w", statusErr) keeps its code.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return status.Code(err)
}

// IsStatus reports whether err carries a gRPC status meant for the caller, as opposed to an
// internal failure that must be logged and hidden.
func IsStatus(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se)
}
