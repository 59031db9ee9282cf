package edge

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// StreamEndGrace is how long a stream the server ends (its token expired, the process
// draining, a terminal revoked) may take to stop before its writes are cut.
const StreamEndGrace = 5 * time.Second

// WriteControl cuts a stream's response: its writes fail from then on (HTTP/2: the stream is
// reset; HTTP/1.1: the connection's writes fail). Ending a stream cancels its context, which
// cannot unblock a send already waiting for a client that reads nothing (a half-open
// connection, a tablet set aside, a client that gives no flow-control window): without a cut
// such a stream would outlive its token, or hold a shutdown for its whole grace, until TCP gives
// up, keeping its goroutine and its caller's stream allowance. Never once the net/http handler
// has returned: the response is not ours to touch then.
type WriteControl struct {
	rc    *http.ResponseController
	grace time.Duration
	mu    sync.Mutex
	done  bool
	timer *time.Timer
}

type writeControlKey struct{}

// WithWriteControl gives the handlers of h's streaming procedures (paths) a WriteControl of
// their response (WriteControlOf), which cuts it grace after the stream is ended.
func WithWriteControl(h http.Handler, grace time.Duration, paths ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range paths {
			if r.URL.Path == p {
				wc := &WriteControl{rc: http.NewResponseController(w), grace: grace}
				defer wc.finish()
				r = r.WithContext(context.WithValue(r.Context(), writeControlKey{}, wc))
				break
			}
		}
		h.ServeHTTP(w, r)
	})
}

// WriteControlOf is the WriteControl of ctx's stream; nil when it has none.
func WriteControlOf(ctx context.Context) *WriteControl {
	wc, _ := ctx.Value(writeControlKey{}).(*WriteControl)
	return wc
}

// CutLater cuts the response after its grace, unless its handler has returned by then: the
// stream has been ended, and one stuck in a send ends then at the latest. wc may be nil.
func (wc *WriteControl) CutLater() {
	if wc == nil {
		return
	}
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if !wc.done && wc.timer == nil {
		wc.timer = time.AfterFunc(wc.grace, wc.cut)
	}
}

func (wc *WriteControl) cut() {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if !wc.done {
		_ = wc.rc.SetWriteDeadline(time.Now())
	}
}

// finish marks the handler returned, and drops a cut still to come.
func (wc *WriteControl) finish() {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	wc.done = true
	if wc.timer != nil {
		wc.timer.Stop()
	}
}
