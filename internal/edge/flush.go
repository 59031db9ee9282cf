package edge

import (
	"net/http"
	"strings"
	"sync"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Connect flushes the response after every message it sends, unary replies included, because
// its handlers cannot tell a unary reply from the first message of a stream. Over HTTP/1.1
// (gRPC-web from browsers and apps) that is a write of its own for the reply and another for
// the trailers and the chunked body's end: two system calls, and often two packets and two reads
// at the client, for every call. A unary procedure's response is whole when its handler
// returns, so for those the writer is handed on without http.Flusher (connect then skips the
// flush, as it allows for unary handlers), and net/http sends the response in one write, with
// a Content-Length when it is small. Streams keep flushing every message.

// serveProcedures serves h, with unary procedures' responses written once, and a time limit on
// reading the request of unary and server-streaming procedures (limitBodyTime), of a client or
// bidi stream over HTTP/1.1, which cannot carry one (answered without reading the body, and
// net/http then reads what is left of it before the reply; a client trickling a long one would
// hold the connection for as long as it liked), and of any other path over either protocol: an
// unknown one, or a plain handler that reads its body (the pos-adapter's vendor webhook, which
// over HTTP/2 would otherwise wait for a trickled body for good). Over HTTP/2 each message of a
// client or bidi stream has the time limit once it has begun (limitMessageTime). A procedure's
// gRPC or gRPC-web body is checked for its framing (checkFrames).
func serveProcedures(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch procedures.of(r.URL.Path) {
		case unaryProcedure:
			limitBodyTime(w, r)
			w = unflushed{w}
		case serverStreamProcedure:
			limitBodyTime(w, r)
		case clientStreamProcedure:
			if r.ProtoMajor == 1 {
				limitBodyTime(w, r)
			} else {
				limitMessageTime(w, r)
			}
		default:
			// Over HTTP/2 too: a plain handler that reads its body (the pos-adapter's vendor
			// webhook) would otherwise wait for a trickled one for good.
			limitBodyTime(w, r)
			h.ServeHTTP(w, r)
			return
		}
		checkFrames(r)
		h.ServeHTTP(w, r)
	})
}

// unflushed hides the Flush of the ResponseWriter it wraps.
type unflushed struct{ http.ResponseWriter }

// Unwrap lets http.ResponseController reach the connection (deadlines), as it does unwrapped.
func (u unflushed) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// procedureKind is what a gRPC path names.
type procedureKind uint8

const (
	otherPath             procedureKind = iota // unknown, not a method
	unaryProcedure                             // one request, one response
	serverStreamProcedure                      // one request, a stream of responses
	clientStreamProcedure                      // a stream of requests (bidi: reflection)
)

// procedureKinds remembers what gRPC paths ("/package.Service/Method") name among the methods
// of the services linked into this binary. Anything else (unknown paths, other handlers) is
// otherPath. Only methods that exist are remembered, so callers inventing paths cannot grow it.
type procedureKinds struct{ known sync.Map } // path → procedureKind

// procedures is the process's one memory of procedure kinds, read by every handler of a call.
var procedures procedureKinds

func (k *procedureKinds) of(path string) procedureKind {
	if v, ok := k.known.Load(path); ok {
		return v.(procedureKind)
	}
	md := method(path)
	if md == nil {
		return otherPath
	}
	kind := otherPath
	switch {
	case !md.IsStreamingClient() && !md.IsStreamingServer():
		kind = unaryProcedure
	case !md.IsStreamingClient():
		kind = serverStreamProcedure
	default:
		kind = clientStreamProcedure
	}
	k.known.Store(path, kind)
	return kind
}

// method is the method path names among the linked-in services, or nil.
func method(path string) protoreflect.MethodDescriptor {
	service, name, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return nil
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil
	}
	return sd.Methods().ByName(protoreflect.Name(name))
}
