package rpcerr_test

import (
	"fmt"
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
