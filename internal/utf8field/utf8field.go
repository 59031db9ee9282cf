// Package utf8field names the string field a protobuf request failed to decode for. Protobuf
// refuses a proto3 string that is not valid UTF-8 with "string field contains invalid UTF-8",
// which says neither which field nor where; a caller gets the field's path instead, as for any
// other bad input. It reads the wire bytes again, so it costs nothing on the success path:
// call it only once decoding has failed.
package utf8field

import (
	"errors"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Problem is how a refusal describes the field Of names.
const Problem = "not valid UTF-8"

// Of returns the path (name, lines[2].sku, labels["k"].note) of the first string field of b, a
// message of type md in the wire format, whose value is not valid UTF-8, when err, the failure
// to decode b, is protobuf's refusal of invalid UTF-8. ok is false for any other failure, and
// when no field can be named (b is malformed before it, say).
func Of(b []byte, md protoreflect.MessageDescriptor, err error) (path string, ok bool) {
	// protobuf's error for it (internal/impl's errInvalidUTF8) has no exported type.
	var bad interface{ InvalidUTF8() bool }
	if !errors.As(err, &bad) || !bad.InvalidUTF8() {
		return "", false
	}
	return walk(b, md, "")
}

// walk finds the first string field below prefix in b, a message of type md, that is not
// valid UTF-8.
func walk(b []byte, md protoreflect.MessageDescriptor, prefix string) (string, bool) {
	seen := map[protowire.Number]int{} // elements of each repeated field so far: the index
	for len(b) > 0 {
		num, typ, v, n := consume(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil { // unknown fields are kept as bytes, never checked
			continue
		}
		name := prefix + string(fd.Name())
		if fd.IsList() {
			name += "[" + strconv.Itoa(seen[num]) + "]"
			seen[num]++
		}
		if path, found := value(fd, typ, v, name); found {
			return path, true
		}
	}
	return "", false
}

// consume reads one field of b: its number, wire type and, for a length-delimited field or a
// group, its content; n is how many bytes it took, negative when b is malformed.
func consume(b []byte) (num protowire.Number, typ protowire.Type, v []byte, n int) {
	num, typ, tn := protowire.ConsumeTag(b)
	if tn < 0 {
		return 0, 0, nil, tn
	}
	switch typ {
	case protowire.BytesType:
		v, n = protowire.ConsumeBytes(b[tn:])
	case protowire.StartGroupType:
		v, n = protowire.ConsumeGroup(num, b[tn:])
	default:
		n = protowire.ConsumeFieldValue(num, typ, b[tn:])
	}
	if n < 0 {
		return 0, 0, nil, n
	}
	return num, typ, v, tn + n
}

// value reports name when v, one occurrence of field fd with wire type typ, is or holds a
// string that is not valid UTF-8. A field sent with another wire type than its own is left be
// (protobuf keeps it as an unknown field).
func value(fd protoreflect.FieldDescriptor, typ protowire.Type, v []byte, name string) (string, bool) {
	switch {
	case fd.IsMap() && typ == protowire.BytesType:
		return entry(fd, v, name)
	case fd.Kind() == protoreflect.StringKind && typ == protowire.BytesType:
		return name, !utf8.Valid(v)
	case fd.Kind() == protoreflect.MessageKind && typ == protowire.BytesType,
		fd.Kind() == protoreflect.GroupKind && typ == protowire.StartGroupType:
		return walk(v, fd.Message(), name+".")
	}
	return "", false
}

// entry looks in b, one entry of map field fd: a key that is not valid UTF-8 is named as the
// map (name), a value as name["key"], below it when it is a message.
func entry(fd protoreflect.FieldDescriptor, b []byte, name string) (string, bool) {
	var key, val []byte // the key field whole (tag and value), the value field's content
	valType := protowire.Type(-1)
	for len(b) > 0 {
		num, typ, v, n := consume(b)
		if n < 0 {
			return "", false
		}
		switch num {
		case fd.MapKey().Number():
			key = b[:n]
			if fd.MapKey().Kind() == protoreflect.StringKind && typ == protowire.BytesType && !utf8.Valid(v) {
				return name, true
			}
		case fd.MapValue().Number():
			val, valType = v, typ
		}
		b = b[n:]
	}
	if valType < 0 {
		return "", false
	}
	// The key is named by its value: decoded alone (the value left out), it decodes whatever the
	// value holds, as the key was found valid above.
	k := dynamicpb.NewMessage(fd.Message())
	if proto.Unmarshal(key, k) != nil {
		return "", false
	}
	return value(fd.MapValue(), valType, val, name+"["+strconv.Quote(k.Get(fd.MapKey()).String())+"]")
}
