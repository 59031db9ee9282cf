package edge

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The public edges' request metrics. The services' own gRPC metrics see only the calls an edge
// let through; these count every call an edge answers, refusals before its handler (a token,
// a rate limit, a request too large) included, so an operator sees shoppers or terminals turned
// away and calls failing because a service behind the edge is down. Labels stay few: the edge,
// the procedure (a served method's full name, or "unknown" for a path under a served service
// that names none) and the code; never a store, an order or a caller.
var (
	edgeRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_edge_requests_total",
		Help: "Calls answered at a public edge (gateway: shoppers; pos: terminals and admins), by procedure and code (the connect/gRPC code name, ok for success). Refusals made before the handler runs (no or a bad token, a rate limit, a request too large) are counted too.",
	}, []string{"edge", "procedure", "code"})
	edgeRequestDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "handoff_edge_request_duration_seconds",
		Help:    "Time an edge took to handle a unary call it admitted, from its request read to its handler's answer (the service behind it included), by procedure.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"edge", "procedure"})
	edgeStreamsOpen = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "handoff_edge_streams_open",
		Help: "Server streams open at a public edge (gateway: shoppers' WatchOrder; pos: terminals' StreamTickets), by procedure: a stream's life is no latency, so it is counted while open, and its answer in handoff_edge_requests_total when it ends.",
	}, []string{"edge", "procedure"})
)

// UnknownProcedure is the procedure label of a path under a served service that names none of
// its methods: invented paths cannot grow the label's values.
const UnknownProcedure = "unknown"

// alertedCodes are the codes whose series exist at 0 from the start for every procedure, so a
// rate() over them sees their first failures (deploy/prometheus/alerts.yml,
// HandoffEdgeFailing): a service behind the edge down or failing.
var alertedCodes = []connect.Code{connect.CodeUnavailable, connect.CodeInternal}

// codeSlots: ok (0) and connect's codes 1 to 16.
const codeSlots = 17

// Requests counts and times the calls one edge answers. Build it with NewRequests, put its
// Interceptor first among the handlers' interceptors, and wrap each service's handler with its
// AdmitBeforeBody (which counts what is answered before the interceptor runs).
type Requests struct {
	edge    string
	procs   map[string]*procedureMetrics // fixed once built: read without a lock
	unknown *procedureMetrics
}

// procedureMetrics are one procedure's series, made on first use and then kept, so a call costs
// no label lookup.
type procedureMetrics struct {
	edge, name string
	codes      [codeSlots]atomic.Pointer[prometheus.Counter]
	duration   prometheus.Observer
	open       prometheus.Gauge // streaming methods only
}

// NewRequests counts the calls to the methods of services (full names) at edge ("gateway",
// "pos").
func NewRequests(edge string, services ...string) *Requests {
	r := &Requests{edge: edge, procs: map[string]*procedureMetrics{}}
	r.unknown = r.newProcedure(UnknownProcedure)
	for _, s := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(s))
		if err != nil {
			panic("edge: no service " + s + " is linked in") // a programming error
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			panic("edge: " + s + " is not a service")
		}
		for i := range sd.Methods().Len() {
			m := sd.Methods().Get(i)
			name := "/" + s + "/" + string(m.Name())
			p := r.newProcedure(name)
			if m.IsStreamingServer() || m.IsStreamingClient() {
				p.open = edgeStreamsOpen.WithLabelValues(edge, name) // there at 0 from the start
			}
			for _, c := range alertedCodes {
				p.counter(int(c))
			}
			r.procs[name] = p
		}
	}
	return r
}

func (r *Requests) newProcedure(name string) *procedureMetrics {
	return &procedureMetrics{edge: r.edge, name: name, duration: edgeRequestDuration.WithLabelValues(r.edge, name)}
}

// procedure is path's metrics: unknown for any path that is not a served method.
func (r *Requests) procedure(path string) *procedureMetrics {
	if p, ok := r.procs[path]; ok {
		return p
	}
	return r.unknown
}

func (p *procedureMetrics) counter(slot int) prometheus.Counter {
	if c := p.codes[slot].Load(); c != nil {
		return *c
	}
	name := "ok"
	if slot != 0 {
		name = connect.Code(slot).String()
	}
	c := edgeRequests.WithLabelValues(p.edge, p.name, name)
	p.codes[slot].CompareAndSwap(nil, &c) // either way, the same child of the vector
	return c
}

// count counts one answer with err (nil: ok).
func (p *procedureMetrics) count(err error) { p.counter(codeSlot(err)).Inc() }

// ErrRestarting is in the error with which an edge ends an open stream because the edge itself
// is shutting down (see Restarting): the client opens it again, through another copy.
var ErrRestarting = errors.New("edge restarting")

// Restarting is an error saying msg that is ErrRestarting, for the Unavailable with which an
// edge ends its open streams when it shuts down. Such a stream was served until then, and is
// counted ok: a rolling restart is no service behind the edge failing (HandoffEdgeFailing).
func Restarting(msg string) error { return restartingError(msg) }

type restartingError string

func (e restartingError) Error() string      { return string(e) }
func (restartingError) Is(target error) bool { return target == ErrRestarting }

// codeSlot is err's code as connect writes it: nil is ok, a context's error its code, any
// other error without a code Unknown; a stream ended by the edge's own restart is ok.
func codeSlot(err error) int {
	if err == nil || errors.Is(err, ErrRestarting) {
		return 0
	}
	code := connect.CodeOf(err)
	if code == connect.CodeUnknown {
		switch {
		case errors.Is(err, context.Canceled):
			code = connect.CodeCanceled
		case errors.Is(err, context.DeadlineExceeded):
			code = connect.CodeDeadlineExceeded
		}
	}
	return slotOf(int(code))
}

func slotOf(code int) int {
	if code < 0 || code >= codeSlots {
		return int(connect.CodeUnknown)
	}
	return code
}

// Interceptor counts the answer of every call whose handler runs, and times unary ones. It must
// be the first (outermost) interceptor, so that refusals by the others (tokens, rate limits,
// open streams) are counted.
func (r *Requests) Interceptor() connect.Interceptor { return requestsInterceptor{r} }

type requestsInterceptor struct{ r *Requests }

func (i requestsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		started(ctx)
		p := i.r.procedure(req.Spec().Procedure)
		start := time.Now()
		res, err := next(ctx, req)
		p.duration.Observe(time.Since(start).Seconds())
		i.r.answered(ctx, p, err)
		return res, err
	}
}

func (i requestsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i requestsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		started(ctx)
		p := i.r.procedure(conn.Spec().Procedure)
		if p.open != nil {
			p.open.Inc()
			defer p.open.Dec()
		}
		err := next(ctx, conn)
		i.r.answered(ctx, p, err)
		return err
	}
}

// started marks ctx's call (if AdmitBeforeBody made one) as in the Interceptor's hands: what is
// written from then on is the handler's.
func started(ctx context.Context) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.started = true
	}
}

// answered counts a call's answer, and marks its call (if AdmitBeforeBody made one) counted.
func (r *Requests) answered(ctx context.Context, p *procedureMetrics, err error) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		if c.counted {
			return
		}
		c.counted = true
	}
	p.count(err)
}

// AdmitBeforeBody is edge.AdmitBeforeBody counting every call to path's procedures once: a
// refusal before the body where it is written, a call whose handler runs in the Interceptor,
// and one answered before its handler's interceptors could run (a request too large or
// malformed, an unknown method) from what was written.
func (r *Requests) AdmitBeforeBody(path string, h http.Handler, admit Admit, opts ...connect.HandlerOption) (string, http.Handler) {
	return admitBeforeBody(path, h, admit, r, opts...)
}

type callKey struct{}

// call is the context of a call AdmitBeforeBody passes on, one allocation that also records
// whether it was admitted and counted, and the status its response got.
type call struct {
	context.Context
	admitted bool
	counted  bool
	started  bool // the Interceptor has run (see started)
	status   int
	w        http.ResponseWriter
	// early is the start of the body written before the Interceptor ran: an answer connect made
	// itself, such as a Connect stream's end-of-stream message with its error.
	early []byte
}

// earlyMax bounds what is kept of a body written before the Interceptor ran.
const earlyMax = 4096

func (c *call) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// writer is w recording the status written, as http.Flusher only if w is one (connect flushes
// unary replies only if it can, see serveProcedures).
func (c *call) writer(w http.ResponseWriter) http.ResponseWriter {
	c.w = w
	if _, ok := w.(http.Flusher); ok {
		return flushingCallWriter{callWriter{c}}
	}
	return callWriter{c}
}

// code is the code of the response written, read from its headers: grpc-status (gRPC's
// trailers, or gRPC-web's trailers-only response), else the HTTP status as Connect maps codes
// to it, or, for a Connect stream (HTTP 200), the end-of-stream message written (early). Only
// answers written before the handler ran are read so.
func (c *call) code() int {
	h := c.w.Header()
	for _, k := range [...]string{"Grpc-Status", http.TrailerPrefix + "Grpc-Status"} {
		if v := h[k]; len(v) > 0 {
			n, err := strconv.Atoi(v[0])
			if err != nil {
				return int(connect.CodeUnknown)
			}
			return slotOf(n)
		}
	}
	if c.status == http.StatusOK && strings.HasPrefix(h.Get("Content-Type"), "application/connect+") {
		return connectEndCode(c.early)
	}
	switch c.status {
	case 0, http.StatusOK:
		return 0
	case http.StatusBadRequest:
		return int(connect.CodeInvalidArgument)
	case http.StatusUnauthorized:
		return int(connect.CodeUnauthenticated)
	case http.StatusForbidden:
		return int(connect.CodePermissionDenied)
	case http.StatusNotFound, http.StatusNotImplemented, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return int(connect.CodeUnimplemented)
	case http.StatusConflict:
		return int(connect.CodeAborted)
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return int(connect.CodeResourceExhausted)
	case 499:
		return int(connect.CodeCanceled)
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return int(connect.CodeUnavailable)
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return int(connect.CodeDeadlineExceeded)
	case http.StatusInternalServerError:
		return int(connect.CodeInternal)
	}
	return int(connect.CodeUnknown)
}

// callWriter records the status of the response it writes. It holds one pointer, so making an
// http.ResponseWriter of it allocates nothing.
type callWriter struct{ c *call }

func (w callWriter) Header() http.Header { return w.c.w.Header() }

func (w callWriter) Write(b []byte) (int, error) {
	if w.c.status == 0 {
		w.c.status = http.StatusOK
	}
	if !w.c.started && len(w.c.early) < earlyMax {
		w.c.early = append(w.c.early, b[:min(len(b), earlyMax-len(w.c.early))]...)
	}
	return w.c.w.Write(b)
}

func (w callWriter) WriteHeader(status int) {
	if w.c.status == 0 {
		w.c.status = status
	}
	w.c.w.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (w callWriter) Unwrap() http.ResponseWriter { return w.c.w }

type flushingCallWriter struct{ callWriter }

func (w flushingCallWriter) Flush() {
	if w.c.status == 0 {
		w.c.status = http.StatusOK
	}
	w.c.w.(http.Flusher).Flush()
}

// connectEndCode is the code of a Connect stream answered with only its end-of-stream message
// (a flags byte with 0x02, a 4-byte length, then JSON with the error if any), as body holds it.
func connectEndCode(body []byte) int {
	if len(body) < 5 || body[0]&0x02 == 0 {
		return int(connect.CodeUnknown)
	}
	n := int(binary.BigEndian.Uint32(body[1:5]))
	if len(body) < 5+n {
		return int(connect.CodeUnknown)
	}
	var end struct {
		Error *struct {
			Code connect.Code `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body[5:5+n], &end); err != nil {
		return int(connect.CodeUnknown)
	}
	if end.Error == nil {
		return 0
	}
	return slotOf(int(end.Error.Code))
}
