package fieldmask_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/handoff-dev/handoff/internal/fieldmask"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
)

// FuzzApply: a mask is applied whole or not at all. A refused one (a path not allowed) is
// InvalidArgument naming update_mask and leaves dst as it was; an accepted one changes the
// named fields to src's and no other.
func FuzzApply(f *testing.F) {
	f.Add("name,tags")
	f.Add("")
	f.Add("name,id")
	f.Add("name,name")
	f.Add("Name")
	f.Add("tags,description,,")
	f.Fuzz(func(t *testing.T, mask string) {
		var paths []string
		if mask != "" {
			paths = strings.Split(mask, ",")
		}
		before := &catalogv1.Product{Id: "p1", Name: "Latte", Description: "Milky", Tags: []string{"hot"}, CategoryId: "cat-espresso"}
		src := &catalogv1.Product{Id: "other", Name: "Flat White", Tags: []string{"new"}, CategoryId: "cat-x"}
		dst := proto.Clone(before).(*catalogv1.Product)
		err := fieldmask.Apply(dst, src, paths, allowed)
		if err != nil {
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "update_mask") {
				t.Fatalf("mask %q refused as %v %q", mask, st.Code(), st.Message())
			}
			if !proto.Equal(dst, before) {
				t.Fatalf("mask %q refused, but dst changed to %v", mask, dst)
			}
			return
		}
		named := map[string]bool{}
		for _, p := range paths {
			named[p] = true
		}
		if len(paths) == 0 {
			for _, p := range allowed {
				named[p] = true
			}
		}
		d, s, b := dst.ProtoReflect(), src.ProtoReflect(), before.ProtoReflect()
		fields := d.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			want := b
			if named[string(fd.Name())] {
				if !allowedName(string(fd.Name())) {
					t.Fatalf("mask %q accepted with %s, which is not allowed", mask, fd.Name())
				}
				want = s
			}
			if !equalField(d, want, fd) {
				t.Fatalf("mask %q: field %s is %v, want %v", mask, fd.Name(), d.Get(fd), want.Get(fd))
			}
		}
	})
}

func allowedName(n string) bool {
	for _, a := range allowed {
		if a == n {
			return true
		}
	}
	return false
}

func equalField(a, b protoreflect.Message, fd protoreflect.FieldDescriptor) bool {
	if a.Has(fd) != b.Has(fd) {
		return false
	}
	ma, mb := a.Interface().(*catalogv1.Product), b.Interface().(*catalogv1.Product)
	ca, cb := &catalogv1.Product{}, &catalogv1.Product{}
	if a.Has(fd) {
		ca.ProtoReflect().Set(fd, ma.ProtoReflect().Get(fd))
		cb.ProtoReflect().Set(fd, mb.ProtoReflect().Get(fd))
	}
	return proto.Equal(ca, cb)
}
