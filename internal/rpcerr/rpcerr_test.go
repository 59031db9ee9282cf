package rpcerr_test

import (
	"fmt"
	"strings"
	"testing"

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
	if st.Code() != codes.NotFound || len(st.Message()) > 400 || !strings.Contains(st.Message(), strings.Repeat("é", 128)+"…") {
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
