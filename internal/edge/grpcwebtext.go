package edge

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// gRPC-web's text mode (application/grpc-web-text) is gRPC-web with the body in base64, both
// ways. It is what the official gRPC-Web JavaScript client (protoc-gen-grpc-web's) speaks by
// default, and its only mode for server streams: an app built on it watches its order that
// way. connect-go speaks the binary mode only, and answered the text mode with a bare 415, so
// WithGRPCWebText turns one into the other at each edge: the request body is decoded and the
// call handed on as binary gRPC-web (admission, limits and handlers see nothing else), and
// the response is encoded as it is written, so a stream's messages reach the client as they
// are sent.

const (
	grpcWebText       = "application/grpc-web-text"
	grpcWebTextProto  = "application/grpc-web-text+proto"
	grpcWebBinaryType = "application/grpc-web+proto"
)

// WithGRPCWebText serves text-mode calls to h as binary ones, and others as they are.
func WithGRPCWebText(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isGRPCWebText(r.Header.Get("Content-Type")) {
			h.ServeHTTP(w, r)
			return
		}
		binary := r.Clone(r.Context())
		binary.Header.Set("Content-Type", grpcWebBinaryType)
		if accept := binary.Header.Get("Accept"); accept != "" {
			binary.Header.Set("Accept", grpcWebBinaryType)
		}
		binary.Body = &textBody{src: r.Body}
		checkFrames(binary) // as serveProcedures checks the binary mode's
		binary.ContentLength = -1
		tw := &textWriter{w: w}
		if f, ok := w.(http.Flusher); ok {
			h.ServeHTTP(&flushingTextWriter{textWriter: tw, f: f}, binary)
		} else {
			h.ServeHTTP(tw, binary)
		}
		tw.finish()
	})
}

// isGRPCWebText reports whether a request's content type is gRPC-web's text mode with protobuf
// messages ("+json" is left to be refused as any unknown type is), in any case: media types
// are case-insensitive, and connect serves the binary mode so.
func isGRPCWebText(contentType string) bool {
	if len(contentType) < len(grpcWebText) || !strings.EqualFold(contentType[:len(grpcWebText)], grpcWebText) {
		return false
	}
	t, _, err := mime.ParseMediaType(contentType)
	return err == nil && (t == grpcWebText || t == grpcWebTextProto)
}

// errBadText is a text-mode body that is not base64.
var errBadText = connect.NewError(connect.CodeInvalidArgument, errors.New("gRPC-web text body: not base64"))

// textBody decodes a text-mode request body. A client may have encoded its body in pieces,
// each padded ("...=" in the middle), so it decodes the base64 a 4-character group at a time
// where there is padding, and as long runs elsewhere.
type textBody struct {
	src  io.ReadCloser
	in   [4096]byte
	inN  int
	out  []byte
	done bool
	err  error
}

func (b *textBody) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.done {
			return 0, b.err
		}
		n, err := b.src.Read(b.in[b.inN:])
		b.inN += n
		usable := b.inN - b.inN%4
		if err != nil {
			b.done, b.err = true, err
			if errors.Is(err, io.EOF) && b.inN%4 != 0 {
				b.err = errBadText
			}
		}
		decoded, ok := decodeText(b.in[:usable])
		if !ok {
			b.done, b.err = true, errBadText
			return 0, b.err
		}
		b.out = decoded
		b.inN = copy(b.in[:], b.in[usable:b.inN])
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

func (b *textBody) Close() error { return b.src.Close() }

// decodeText decodes whole 4-character groups of base64, padded ones anywhere among them.
func decodeText(in []byte) ([]byte, bool) {
	out := make([]byte, base64.StdEncoding.DecodedLen(len(in)))
	n := 0
	for len(in) > 0 {
		end := len(in)
		if i := bytes.IndexByte(in, '='); i >= 0 {
			end = (i/4 + 1) * 4 // up to the end of the padded group
		}
		m, err := base64.StdEncoding.Decode(out[n:], in[:end])
		if err != nil {
			return nil, false
		}
		n, in = n+m, in[end:]
	}
	return out[:n], true
}

// textWriter encodes a binary gRPC-web response as text. Whole 3-byte groups are encoded as
// they are written; the rest (at most 2 bytes) waits for the next write, a flush or the end,
// where it is padded: padding then falls only at flushes, between messages, which the
// official clients decode group by group.
type textWriter struct {
	w           http.ResponseWriter
	wroteHeader bool
	rest        []byte
	enc         []byte
}

func (t *textWriter) Header() http.Header { return t.w.Header() }

func (t *textWriter) WriteHeader(code int) {
	if t.wroteHeader {
		return
	}
	t.wroteHeader = true
	h := t.w.Header()
	if ct := h.Get("Content-Type"); ct == "" || strings.HasPrefix(ct, "application/grpc-web") {
		h.Set("Content-Type", grpcWebTextProto)
	}
	h.Del("Content-Length") // of the binary body
	t.w.WriteHeader(code)
}

func (t *textWriter) Write(p []byte) (int, error) {
	if !t.wroteHeader {
		t.WriteHeader(http.StatusOK)
	}
	n := len(p)
	if len(t.rest) > 0 {
		take := min(3-len(t.rest), len(p))
		t.rest, p = append(t.rest, p[:take]...), p[take:]
		if len(t.rest) < 3 {
			return n, nil
		}
		if err := t.emit(t.rest); err != nil {
			return 0, err
		}
		t.rest = t.rest[:0]
	}
	whole := len(p) - len(p)%3
	if err := t.emit(p[:whole]); err != nil {
		return 0, err
	}
	t.rest = append(t.rest, p[whole:]...)
	return n, nil
}

// emit writes p encoded.
func (t *textWriter) emit(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	t.enc = base64.StdEncoding.AppendEncode(t.enc[:0], p)
	_, err := t.w.Write(t.enc)
	return err
}

// finish writes what is left of the response, padded, and its header when the handler wrote
// none (a trailers-only answer, its status in the header).
func (t *textWriter) finish() {
	if !t.wroteHeader {
		t.WriteHeader(http.StatusOK)
	}
	if len(t.rest) > 0 {
		_ = t.emit(t.rest)
		t.rest = t.rest[:0]
	}
}

// Unwrap lets http.ResponseController reach the connection (deadlines, flushes).
func (t *textWriter) Unwrap() http.ResponseWriter { return t.w }

// flushingTextWriter is a textWriter over a writer that flushes (a stream's): a flush sends
// everything written so far.
type flushingTextWriter struct {
	*textWriter
	f http.Flusher
}

func (t *flushingTextWriter) Flush() {
	t.finish()
	t.f.Flush()
}
