package edge

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
)

// Admit authenticates and rate-limits a call from its headers alone, returning the context
// its handler runs with.
type Admit func(ctx context.Context, procedure string, header http.Header, peerAddr string) (context.Context, error)

// AdmitBeforeBody admits each call to h's procedures (unary and server streams) as soon as its
// headers are in, before a byte of its body is read: a token and rate limits need nothing else.
// Admitted only in an interceptor, after the body, a client trickling bodies (up to
// bodyTimeout each) would hold a connection and a goroutine per call, uncharged and
// unauthenticated, as many as it liked. A refusal is written in the caller's protocol, as the
// handler would; a path that is no such procedure (an unknown method) is left to h to answer.
// Interceptors ask Admitted before admitting a call again.
func AdmitBeforeBody(path string, h http.Handler, admit Admit, opts ...connect.HandlerOption) (string, http.Handler) {
	return admitBeforeBody(path, h, admit, nil, opts...)
}

// admitBeforeBody is AdmitBeforeBody, counting each call once in requests unless nil.
func admitBeforeBody(path string, h http.Handler, admit Admit, requests *Requests, opts ...connect.HandlerOption) (string, http.Handler) {
	refuse := connect.NewErrorWriter(opts...)
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if procedures.of(r.URL.Path) == otherPath || !refuse.IsSupported(r) {
			if requests == nil {
				h.ServeHTTP(w, r)
				return
			}
			// Connect answers these itself (an unknown method, a content type it does not
			// speak), or the interceptors admit the call and count it.
			c := &call{Context: r.Context()}
			h.ServeHTTP(c.writer(w), r.WithContext(c))
			if !c.counted {
				requests.procedure(r.URL.Path).counter(c.code()).Inc()
			}
			return
		}
		ctx, err := admit(r.Context(), r.URL.Path, r.Header, r.RemoteAddr)
		if err != nil {
			if requests != nil {
				requests.procedure(r.URL.Path).count(err)
			}
			if r.ProtoMajor == 1 {
				// The body is left unread: HTTP/1.1 would wait for it before the answer, and
				// then for its end to reuse the connection, which closes after the answer.
				w.Header().Set("Connection", "close")
				defer func() { _ = http.NewResponseController(w).SetReadDeadline(time.Now()) }()
			}
			_ = refuse.Write(w, r, err)
			return
		}
		c := &call{Context: ctx, admitted: true}
		if requests == nil {
			h.ServeHTTP(w, r.WithContext(c))
			return
		}
		h.ServeHTTP(c.writer(w), r.WithContext(c))
		if !c.counted {
			// Answered before the interceptors ran: a request too large or malformed.
			requests.procedure(r.URL.Path).counter(c.code()).Inc()
		}
	})
}

// Admitted reports whether AdmitBeforeBody admitted the call of ctx.
func Admitted(ctx context.Context) bool {
	c, ok := ctx.Value(callKey{}).(*call)
	return ok && c.admitted
}

// CallerTimeout is ctx bounded by the timeout a call's headers ask for (grpc-timeout for gRPC
// and gRPC-web, Connect-Timeout-Ms for Connect), which Connect applies only once the call is
// admitted: an admission that may wait (a token whose identity provider's key is being
// fetched) then waits no longer than its caller. A malformed timeout is left to Connect to
// refuse.
func CallerTimeout(ctx context.Context, h http.Header) (context.Context, context.CancelFunc) {
	if d, ok := requestTimeout(h); ok {
		return context.WithTimeout(ctx, d)
	}
	return ctx, func() {}
}

// requestTimeout parses a call's timeout header: grpc-timeout is up to 8 digits and a unit
// (H, M, S, m, u, n); Connect-Timeout-Ms up to 10 digits of milliseconds.
func requestTimeout(h http.Header) (time.Duration, bool) {
	if v := h.Get("Grpc-Timeout"); v != "" {
		if len(v) < 2 || len(v) > 9 {
			return 0, false
		}
		n, err := strconv.ParseUint(v[:len(v)-1], 10, 64)
		if err != nil {
			return 0, false
		}
		var unit time.Duration
		switch v[len(v)-1] {
		case 'H':
			unit = time.Hour
		case 'M':
			unit = time.Minute
		case 'S':
			unit = time.Second
		case 'm':
			unit = time.Millisecond
		case 'u':
			unit = time.Microsecond
		case 'n':
			unit = time.Nanosecond
		default:
			return 0, false
		}
		if n > uint64(math.MaxInt64/unit) {
			return math.MaxInt64, true
		}
		return time.Duration(n) * unit, true
	}
	if v := h.Get("Connect-Timeout-Ms"); v != "" && len(v) <= 10 {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, false
		}
		return time.Duration(n) * time.Millisecond, true
	}
	return 0, false
}
