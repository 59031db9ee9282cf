package testenv

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Refusal is a call that bad input must have refused (DESIGN.md invariant 7): with Code, or
// with any code that puts the fault on the caller when Code is 0, and a message naming Field.
type Refusal struct {
	Name  string
	Do    func() error
	Code  codes.Code
	Field string
}

// RefusedEach runs each call as a subtest of t and fails it unless it was refused as its
// Refusal says. Whether the refusals changed anything is the caller's to check, before and
// after.
func RefusedEach(t *testing.T, calls []Refusal) {
	t.Helper()
	for _, c := range calls {
		t.Run(c.Name, func(t *testing.T) {
			err := c.Do()
			st, ok := status.FromError(err)
			if err == nil || !ok {
				t.Fatalf("got %v; want a refusal naming %q", err, c.Field)
			}
			switch {
			case c.Code == 0 && !clientFault(st.Code()):
				t.Fatalf("code %v (%.300q); want a client-fault code naming %q", st.Code(), st.Message(), c.Field)
			case c.Code != 0 && st.Code() != c.Code:
				t.Fatalf("code %v (%.300q); want %v naming %q", st.Code(), st.Message(), c.Code, c.Field)
			}
			if !strings.Contains(st.Message(), c.Field) {
				t.Fatalf("message %.300q does not name %q", st.Message(), c.Field)
			}
		})
	}
}

// clientFault reports whether code says the caller's request was at fault.
func clientFault(code codes.Code) bool {
	switch code {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.ResourceExhausted:
		return true
	}
	return false
}
