package edge

import (
	"context"
	"net/http"
	"time"

	"connectrpc.com/connect"
)

// Admit authenticates and rate-limits a call from its headers alone, returning the context
// its handler runs with.
type Admit func(ctx context.Context, procedure string, header http.Header, peerAddr string) (context.Context, error)

type admittedKey struct{}

// AdmitBeforeBody admits each call to h's procedures (unary and server streams) as soon as its
// headers are in, before a byte of its body is read: a token and rate limits need nothing else.
// Admitted only in an interceptor, after the body, a client trickling bodies (up to
// bodyTimeout each) would hold a connection and a goroutine per call, uncharged and
// unauthenticated, as many as it liked. A refusal is written in the caller's protocol, as the
// handler would; a path that is no such procedure (an unknown method) is left to h to answer.
// Interceptors ask Admitted before admitting a call again.
func AdmitBeforeBody(path string, h http.Handler, admit Admit, opts ...connect.HandlerOption) (string, http.Handler) {
	refuse := connect.NewErrorWriter(opts...)
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if procedures.of(r.URL.Path) == otherPath || !refuse.IsSupported(r) {
			h.ServeHTTP(w, r)
			return
		}
		ctx, err := admit(r.Context(), r.URL.Path, r.Header, r.RemoteAddr)
		if err != nil {
			if r.ProtoMajor == 1 {
				// The body is left unread: HTTP/1.1 would wait for it before the answer, and
				// then for its end to reuse the connection, which closes after the answer.
				w.Header().Set("Connection", "close")
				defer func() { _ = http.NewResponseController(w).SetReadDeadline(time.Now()) }()
			}
			_ = refuse.Write(w, r, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, admittedKey{}, true)))
	})
}

// Admitted reports whether AdmitBeforeBody admitted the call of ctx.
func Admitted(ctx context.Context) bool { return ctx.Value(admittedKey{}) != nil }
