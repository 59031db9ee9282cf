package rpcerr_test

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

func TestViolationsNameEveryFieldInMessageAndDetails(t *testing.T) {
	var v rpcerr.Violations
	if v.Err() != nil {
		t.Fatal("no violations must mean no error")
	}
	v.Add("product.name", "required")
	v.Addf("product.variants[0].price.amount_minor", "must be > 0, got %d", -5)
	st := status.Convert(v.Err())
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v, want InvalidArgument", st.Code())
	}
	want := "product.name: required; product.variants[0].price.amount_minor: must be > 0, got -5"
	if st.Message() != want {
		t.Fatalf("message = %q, want %q", st.Message(), want)
	}
	if len(st.Details()) != 1 {
		t.Fatalf("details = %v, want one BadRequest", st.Details())
	}
	br, ok := st.Details()[0].(*errdetails.BadRequest)
	if !ok || len(br.GetFieldViolations()) != 2 || br.GetFieldViolations()[1].GetField() != "product.variants[0].price.amount_minor" {
		t.Fatalf("BadRequest detail = %v", st.Details()[0])
	}
}

func TestCodeLooksThroughWrapping(t *testing.T) {
	err := fmt.Errorf("load product: %w", rpcerr.NotFound("product", "prd-x"))
	if got := rpcerr.Code(err); got != codes.NotFound {
		t.Fatalf("Code = %v, want NotFound", got)
	}
	if !rpcerr.IsStatus(err) || rpcerr.IsStatus(fmt.Errorf("plain")) {
		t.Fatal("IsStatus must tell status errors from plain ones")
	}
}

// A NotFound repeats the id asked for, but not a megabyte of it.
func TestNotFoundEchoesAnIDBoundedInLength(t *testing.T) {
	if got := status.Convert(rpcerr.NotFound("order", "o-1")).Message(); got != `order "o-1" not found` {
		t.Fatalf("message = %q", got)
	}
	huge := strings.Repeat("é", 900_000)
	st := status.Convert(rpcerr.NotFound("order", huge))
	if st.Code() != codes.NotFound || len(st.Message()) > 400 || !strings.Contains(st.Message(), strings.Repeat("é", 64)+"…") {
		t.Fatalf("a huge unknown id: %d bytes of message %.80q…", len(st.Message()), st.Message())
	}
}

func TestFailedPreconditionReasonCarriesAnErrorInfoReasonReads(t *testing.T) {
	err := rpcerr.FailedPreconditionReason("inventory.handoff.dev", "STOCK_BELOW_ZERO", "delta: %d would take on hand below 0", -3)
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "delta: -3 would take on hand below 0" {
		t.Fatalf("status = %v %q; want FailedPrecondition with the message", st.Code(), st.Message())
	}
	wrapped := fmt.Errorf("adjust stock: %w", err)
	if got := rpcerr.Reason(wrapped, "inventory.handoff.dev"); got != "STOCK_BELOW_ZERO" {
		t.Fatalf("Reason = %q; want STOCK_BELOW_ZERO", got)
	}
	if got := rpcerr.Reason(err, "other.handoff.dev"); got != "" {
		t.Fatalf("Reason of another domain = %q; want none", got)
	}
	for _, none := range []error{nil, fmt.Errorf("plain"), rpcerr.FailedPrecondition("no reason")} {
		if got := rpcerr.Reason(none, "inventory.handoff.dev"); got != "" {
			t.Fatalf("Reason(%v) = %q; want none", none, got)
		}
	}
}

// A refusal repeats what it refuses in a bounded space, whatever the request held: a refusal
// many times its request overflowed the headers it travels in (the connection dropped, the
// call answered Unavailable).
func TestARefusalStaysSmallWhateverItRepeats(t *testing.T) {
	huge := strings.Repeat("\x01é", 1<<18)
	size := func(err error) int {
		st := status.Convert(err)
		n := len(st.Message())
		for _, d := range st.Proto().GetDetails() {
			n += len(d.GetValue())
		}
		return n
	}
	var many rpcerr.Violations
	for i := range 10000 {
		many.Addf(fmt.Sprintf("lines[%d].sku", i), "%q is not a SKU", strings.Repeat("\x01", 1000))
	}
	for name, err := range map[string]error{
		"Invalid":            rpcerr.Invalid("skus[0]", fmt.Sprintf("%q is not a SKU", huge)),
		"Invalid field":      rpcerr.Invalid(huge, "bad"),
		"many violations":    many.Err(),
		"FailedPrecondition": rpcerr.FailedPrecondition("store %q is paused", huge),
		"PermissionDenied":   rpcerr.PermissionDenied("not allowed to act for store %q", huge),
		"Aborted":            rpcerr.Aborted("version %q is stale", huge),
		"AlreadyExists":      rpcerr.AlreadyExists("store", huge),
		"NotFound":           rpcerr.NotFound("store", huge),
		"with a reason":      rpcerr.FailedPreconditionReason("handoff.dev", "STORE_PAUSED", "store %q is paused", huge),
	} {
		if n := size(err); n > 80<<10 {
			t.Errorf("%s: a refusal of %d bytes for a %d-byte input", name, n, len(huge))
		}
		if msg := status.Convert(err).Message(); !utf8.ValidString(msg) {
			t.Errorf("%s: the message cut is not valid UTF-8", name)
		}
	}
	msg := status.Convert(many.Err()).Message()
	if !strings.HasPrefix(msg, "lines[0].sku: ") || !strings.Contains(status.Convert(many.Err()).Message(), "…") {
		t.Errorf("10,000 violations: message %.100q…; want the first named, cut and marked", msg)
	}
	var few rpcerr.Violations
	for i := range 70 {
		few.Add(fmt.Sprintf("lines[%d].quantity", i), "must be 1-99")
	}
	if msg := status.Convert(few.Err()).Message(); !strings.HasSuffix(msg, "; and 6 more") {
		t.Errorf("70 violations: message ends %q; want the 6 past the 64 detailed counted", msg[len(msg)-40:])
	}
}

// An echoed value leaves room for the reason around it: %q writes a character of four bytes
// as up to ten, so an echo cut by characters filled a field's whole description.
func TestAnEchoedValueDoesNotCrowdOutTheReason(t *testing.T) {
	for _, echoed := range []string{strings.Repeat("\U000E0001", 200), strings.Repeat("\x01", 1000), strings.Repeat("é", 1000)} {
		var v rpcerr.Violations
		v.Addf("variants[0].sku", "%q must be 1-64 of A-Z, 0-9, '.', '_', '-'", rpcerr.Echo(echoed))
		d := status.Convert(v.Err()).Details()[0].(*errdetails.BadRequest).GetFieldViolations()[0]
		if d.GetField() != "variants[0].sku" || !strings.Contains(d.GetDescription(), "must be 1-64") {
			t.Errorf("%.8q…: field %q, description of %d bytes ending %q; want the field and its reason", echoed, d.GetField(), len(d.GetDescription()), d.GetDescription()[len(d.GetDescription())-30:])
		}
	}
	if got := rpcerr.Echo("sea-capitol-hill-01"); got != "sea-capitol-hill-01" {
		t.Errorf("a short id echoed as %q", got)
	}
}
