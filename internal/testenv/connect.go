package testenv

import (
	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// SendBytes is a connect client option whose codec sends b as every request message, whatever
// the call's, and reads replies as protobuf: for requests no client would encode (a string
// that is not UTF-8, say).
func SendBytes(b []byte) connect.Option { return connect.WithCodec(sendBytes(b)) }

type sendBytes []byte

func (sendBytes) Name() string                  { return "proto" }
func (s sendBytes) Marshal(any) ([]byte, error) { return s, nil }
func (sendBytes) Unmarshal(b []byte, m any) error {
	return proto.Unmarshal(b, m.(proto.Message))
}
