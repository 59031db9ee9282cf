package edge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// bodyTimeout is how long a client may take to send the request of a unary or server-streaming
// call, one message of at most the size limit. The server's ReadTimeout cannot serve: over
// HTTP/1.1 it stays on the connection while the handler runs, and a stream outliving it would
// be cancelled. Without a limit a client sending its body a byte at a time holds a connection
// and a goroutine for as long as it likes.
var bodyTimeout = 30 * time.Second

// limitBodyTime gives r's body until bodyTimeout to arrive, and lifts the limit once all of it
// has, so the handler's response and a stream's life are not limited. A connection whose body
// failed to arrive is closed after the reply (HTTP/1.1; over HTTP/2 only the stream fails):
// what is left of that body would otherwise be awaited as the next request's header.
func limitBodyTime(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(bodyTimeout)) != nil {
		return // a writer without deadlines: nothing to lift either
	}
	r.Body = &timedBody{ReadCloser: r.Body, rc: rc, w: w, http1: r.ProtoMajor == 1}
}

// timedBody lifts its connection's read deadline when it has been read to its end.
type timedBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	w     http.ResponseWriter
	http1 bool
	lift  sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.lift.Do(func() { _ = b.rc.SetReadDeadline(time.Time{}) })
	case isTimeout(err):
		if b.http1 {
			b.w.Header().Set("Connection", "close")
		}
		err = bodyNotReceived()
	}
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// bodyNotReceived is what a body not in within bodyTimeout reads as: DeadlineExceeded, saying
// so. The read's own error (over HTTP/1.1 "read tcp 10.0.0.5:8080->...: i/o timeout") named
// the server's socket to the client. It is still os.ErrDeadlineExceeded to errors.Is, for plain
// handlers (the pos-adapter's vendor webhook) telling a late body from a lost one.
func bodyNotReceived() error {
	return connect.NewError(connect.CodeDeadlineExceeded, notReceived{within: bodyTimeout})
}

type notReceived struct{ within time.Duration }

func (e notReceived) Error() string {
	return fmt.Sprintf("request body not received within %s", e.within)
}

func (notReceived) Unwrap() error { return os.ErrDeadlineExceeded }

// limitMessageTime gives each message of r's body, a client or bidi stream over HTTP/2, until
// bodyTimeout to arrive once its first byte has: the stream may wait as long as it likes
// between messages (an idle reflection session), but a client that stalls mid-message would
// otherwise hold the stream and its handler for good, its connection kept alive by pings.
func limitMessageTime(w http.ResponseWriter, r *http.Request) {
	r.Body = &messageTimedBody{ReadCloser: r.Body, rc: http.NewResponseController(w)}
}

// messageTimedBody has a read deadline while a message of the body it reads is under way.
type messageTimedBody struct {
	io.ReadCloser
	rc  *http.ResponseController
	env envelopes
}

func (b *messageTimedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	for read := p[:n]; len(read) > 0; {
		var begun, whole bool
		read, begun, whole = b.env.step(read)
		if begun {
			_ = b.rc.SetReadDeadline(time.Now().Add(bodyTimeout))
		}
		if whole {
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	if isTimeout(err) {
		err = bodyNotReceived()
	}
	return n, err
}

// envelopes follows the gRPC envelopes (a flag byte and a 4-byte length, then the message) of a
// body as it is read.
type envelopes struct {
	prefix [5]byte
	got    int    // bytes of the current message's prefix read
	left   uint32 // bytes of its message still to come, once the prefix is read
}

// step takes what it can of read, up to the end of the current prefix or message, and returns
// the rest; begun if it took a message's first byte (its flags), whole if it ended one.
func (e *envelopes) step(read []byte) (rest []byte, begun, whole bool) {
	if e.got < len(e.prefix) {
		begun = e.got == 0
		k := copy(e.prefix[e.got:], read)
		e.got, read = e.got+k, read[k:]
		if e.got == len(e.prefix) {
			e.left = binary.BigEndian.Uint32(e.prefix[1:])
		}
	} else {
		k := min(uint32(len(read)), e.left)
		e.left, read = e.left-k, read[k:]
	}
	if e.got == len(e.prefix) && e.left == 0 {
		e.got, whole = 0, true
	}
	return read, begun, whole
}

// checkFrames refuses, as the client's fault (InvalidArgument), a gRPC or gRPC-web request body
// that breaks the protocol's framing: a message flagged other than as a message (or, in
// gRPC-web, the trailers connect reads as the request's end), one flagged compressed in a call
// that names no compression, or a body ending within a message's prefix or before the length
// it gave. Connect answers those Internal, which the edges count as a server failure
// (handoff_edge_requests_total{code="internal"}, alert HandoffEdgeFailing); it passes the
// error a body's read returns on as it is. Other bodies (Connect's, and gRPC-web's text mode
// until WithGRPCWebText decodes it) are left as they are.
func checkFrames(r *http.Request) {
	web := false
	switch mediaType(r.Header.Get("Content-Type")) {
	case "application/grpc", "application/grpc+proto", "application/grpc+json":
	case "application/grpc-web", "application/grpc-web+proto", "application/grpc-web+json":
		web = true
	default:
		return
	}
	enc := r.Header.Get("Grpc-Encoding")
	r.Body = &framedBody{ReadCloser: r.Body, web: web, compressed: enc != "" && enc != "identity"}
}

// mediaType is contentType without its parameters, in lower case.
func mediaType(contentType string) string {
	t, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

// framedBody is a gRPC or gRPC-web request body checked for its framing (checkFrames).
type framedBody struct {
	io.ReadCloser
	web        bool // gRPC-web: its trailer flag (0x80) is connect's to read
	compressed bool // the call names a compression (grpc-encoding)
	env        envelopes
	err        error // the framing's fault, once found: every later read returns it
}

func (b *framedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p)
	for read := p[:n]; len(read) > 0; {
		at := n - len(read)
		var begun bool
		if read, begun, _ = b.env.step(read); begun {
			if b.err = b.checkFlags(b.env.prefix[0]); b.err != nil {
				return at, b.err // the messages before it, whole, are the reader's
			}
		}
	}
	if err == io.EOF && b.env.got > 0 {
		if b.env.got < len(b.env.prefix) {
			b.err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body ends within a message's %d-byte prefix", len(b.env.prefix)))
		} else {
			size := binary.BigEndian.Uint32(b.env.prefix[1:])
			b.err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body ends %d bytes into a message of %d", size-b.env.left, size))
		}
		return n, b.err
	}
	return n, err
}

// checkFlags is the fault of a message's flags, if any.
func (b *framedBody) checkFlags(flags byte) error {
	const compressed, trailer = 0x01, 0x80
	known := byte(compressed)
	if b.web {
		known |= trailer
	}
	switch {
	case flags&^known != 0:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request message flags %#02x: not a gRPC message", flags))
	case flags&compressed != 0 && !b.compressed:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("request message flagged compressed, but the call names no compression (grpc-encoding)"))
	}
	return nil
}
