package edge

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/utf8field"
)

// WithCodec gives an edge's handlers its protobuf binary codec, in place of connect's own of
// the same name. It is connect's but for one refusal: a request holding invalid UTF-8 in a
// string is refused naming the field ("unmarshal message: name: not valid UTF-8"), where
// connect's says only "string field contains invalid UTF-8".
func WithCodec() connect.Option { return connect.WithCodec(protoCodec{}) }

type protoCodec struct{}

func (protoCodec) Name() string { return "proto" }

func (protoCodec) Marshal(m any) ([]byte, error) {
	pm, err := protoMessage(m)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(pm)
}

// MarshalAppend lets connect encode into its pooled buffers, as with its own codec.
func (protoCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, err := protoMessage(m)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (protoCodec) Unmarshal(data []byte, m any) error {
	pm, err := protoMessage(m)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		if path, ok := utf8field.Of(data, pm.ProtoReflect().Descriptor(), err); ok {
			return errors.New(path + ": " + utf8field.Problem)
		}
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

func protoMessage(m any) (proto.Message, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return pm, nil
}
