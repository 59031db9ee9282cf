// Package pgtext refuses text that PostgreSQL cannot store. Its text types cannot hold the NUL
// character (U+0000): a request carrying one fails at its first write with SQLSTATE 22021, an
// Internal error for the caller's mistake, after whatever the request did before that write (a
// reservation of stock, a claim on a cart). Servers check each request up front instead, and
// answer InvalidArgument naming the field.
package pgtext

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

// Clip makes s text Postgres can store, of at most n bytes: invalid UTF-8 and NUL characters
// become U+FFFD, and a cut falls between characters. For what the system writes of others' text
// (a vendor's error, a host name in its Unicode form): cut mid-character or holding a NUL, its
// write fails with SQLSTATE 22021, and whatever shares the statement with it.
func Clip(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Check returns InvalidArgument naming the first string field of m, at any depth (lines[2].sku,
// labels["k"]), that holds a NUL character; nil when there is none. Bytes fields may hold
// anything.
func Check(m proto.Message) error {
	if m == nil {
		return nil
	}
	if path, ok := find(m.ProtoReflect(), ""); ok {
		return rpcerr.Invalid(path, "must not contain NUL (U+0000) characters")
	}
	return nil
}

// find returns the path of the first field of m, below prefix, holding a NUL.
func find(m protoreflect.Message, prefix string) (path string, found bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if path, found = value(fd, l.Get(i), name+"["+strconv.Itoa(i)+"]"); found {
					return false
				}
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := k.String()
				if strings.IndexByte(key, 0) >= 0 {
					path, found = name, true
					return false
				}
				path, found = value(fd.MapValue(), mv, name+"["+strconv.Quote(key)+"]")
				return !found
			})
		default:
			path, found = value(fd, v, name)
		}
		return !found
	})
	return path, found
}

// value reports path when v, a value of field fd, is or holds a string with a NUL.
func value(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) (string, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if strings.IndexByte(v.String(), 0) >= 0 {
			return path, true
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return find(v.Message(), path+".")
	}
	return "", false
}
