// Package fieldmask applies an update's google.protobuf.FieldMask: the Update RPCs change only
// the fields the caller names, from an allowed list, and refuse any other path by name.
package fieldmask

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

// Apply copies the top-level fields named in paths from src to dst (messages of one type). An
// empty mask means every allowed field. A path not in allowed is an InvalidArgument naming
// update_mask, and dst is then left as it was.
func Apply(dst, src proto.Message, paths, allowed []string) error {
	if len(paths) == 0 {
		paths = allowed
	}
	for _, p := range paths {
		if !slices.Contains(allowed, p) {
			return rpcerr.Invalid("update_mask", fmt.Sprintf("%q is not an updatable field (%s)", p, strings.Join(allowed, ", ")))
		}
	}
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	fields := d.Descriptor().Fields()
	for _, p := range paths {
		fd := fields.ByName(protoreflect.Name(p))
		if fd == nil {
			// allowed is the caller's own list: a name that is not a field is a programming error.
			panic(fmt.Sprintf("fieldmask: %s has no field %q", d.Descriptor().FullName(), p))
		}
		if s.Has(fd) {
			d.Set(fd, s.Get(fd))
		} else {
			d.Clear(fd)
		}
	}
	return nil
}
