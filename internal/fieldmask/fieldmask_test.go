package fieldmask_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/fieldmask"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
)

var allowed = []string{"name", "description", "tags"}

func TestApplyChangesOnlyTheNamedFields(t *testing.T) {
	dst := &catalogv1.Product{Id: "p1", Name: "Latte", Description: "Milky", Tags: []string{"hot"}}
	src := &catalogv1.Product{Id: "other", Name: "Flat White", Description: "", Tags: nil}
	if err := fieldmask.Apply(dst, src, []string{"name", "tags"}, allowed); err != nil {
		t.Fatal(err)
	}
	want := &catalogv1.Product{Id: "p1", Name: "Flat White", Description: "Milky"}
	if !proto.Equal(dst, want) {
		t.Fatalf("got %v, want %v", dst, want)
	}
}

func TestEmptyMaskMeansEveryAllowedField(t *testing.T) {
	dst := &catalogv1.Product{Id: "p1", Name: "Latte", Description: "Milky", CategoryId: "cat-espresso"}
	src := &catalogv1.Product{Name: "Mocha", Tags: []string{"sweet"}}
	if err := fieldmask.Apply(dst, src, nil, allowed); err != nil {
		t.Fatal(err)
	}
	want := &catalogv1.Product{Id: "p1", Name: "Mocha", Tags: []string{"sweet"}, CategoryId: "cat-espresso"}
	if !proto.Equal(dst, want) {
		t.Fatalf("got %v, want %v", dst, want)
	}
}

func TestUnknownOrForbiddenPathIsRefusedAndChangesNothing(t *testing.T) {
	dst := &catalogv1.Product{Id: "p1", Name: "Latte"}
	err := fieldmask.Apply(dst, &catalogv1.Product{Name: "x", Id: "hijack"}, []string{"name", "id"}, allowed)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message()[:11] != "update_mask" {
		t.Fatalf("err = %v, want InvalidArgument naming update_mask", err)
	}
	if dst.GetName() != "Latte" || dst.GetId() != "p1" {
		t.Fatalf("a refused mask changed the message: %v", dst)
	}
}
