package edge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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

// messageTimedBody follows the gRPC envelopes (a flag byte and a 4-byte length, then the
// message) of the body it reads, with a read deadline while one is under way.
type messageTimedBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	prefix [5]byte
	got    int    // bytes of the current message's prefix read
	left   uint32 // bytes of its message still to come, once the prefix is read
}

func (b *messageTimedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	for read := p[:n]; len(read) > 0; {
		if b.got < len(b.prefix) {
			if b.got == 0 {
				_ = b.rc.SetReadDeadline(time.Now().Add(bodyTimeout))
			}
			k := copy(b.prefix[b.got:], read)
			b.got, read = b.got+k, read[k:]
			if b.got == len(b.prefix) {
				b.left = binary.BigEndian.Uint32(b.prefix[1:])
			}
		} else {
			k := min(uint32(len(read)), b.left)
			b.left, read = b.left-k, read[k:]
		}
		if b.got == len(b.prefix) && b.left == 0 { // the message is whole
			b.got = 0
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	if isTimeout(err) {
		err = bodyNotReceived()
	}
	return n, err
}
