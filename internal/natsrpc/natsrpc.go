// Package natsrpc owns service-to-service request/reply: questions one Handoff
// service asks another and needs answered now (price these lines, reserve this
// order). It carries protobuf payloads over NATS request/reply, built on
// nats.go's micro framework so that every endpoint is discoverable and has
// stats ($SRV.INFO, $SRV.STATS), and served in a queue group so that copies of
// a service share the load.
//
// The wire contract, for anyone writing a client in another language:
//
//   - Subjects are handoff.rpc.<service>.<method> (see [Subject]); no stream
//     captures them (package streams checks that).
//   - The request body is the protobuf-encoded request message.
//   - Header Handoff-Timeout-Ms carries the caller's remaining time budget in
//     whole milliseconds, rounded up. It is a duration, not an absolute time,
//     so that clock skew between machines does not matter. Transit time is not
//     subtracted: at NATS latencies that is harmless, and the caller stops
//     waiting at its own deadline anyway. The handler's context gets a
//     deadline of receipt time plus that budget (capped at [MaxTimeout]); a
//     request without the header gets [DefaultTimeout].
//   - A success reply's body is the protobuf-encoded response message.
//   - An error reply has micro's headers Nats-Service-Error-Code (the gRPC
//     code number, e.g. "5") and Nats-Service-Error (the message), header
//     Handoff-Grpc-Code (the code name, e.g. "NOT_FOUND") for humans, and a
//     body that is the protobuf-encoded google.rpc.Status, so that the code,
//     the message and every detail arrive intact.
//
// Concurrency: micro delivers each endpoint's requests on one subscription;
// Handle runs every request in its own goroutine, up to MaxConcurrent at once
// per service, so a handler waiting on Postgres does not hold up the requests
// behind it (and a handler that coalesces concurrent requests can see them).
// Beyond that, more copies share the load through micro's queue group.
package natsrpc

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// SubjectPrefix is the root of every request/reply subject.
const SubjectPrefix = "handoff.rpc"

// Header names of the wire contract.
const (
	// TimeoutHeader carries the caller's remaining budget in milliseconds.
	TimeoutHeader = "Handoff-Timeout-Ms"
	// DeadlineHeader carries the caller's deadline, Unix milliseconds: a request that waited
	// past it (in a busy server's queue, in a reconnecting client's buffer) is refused
	// unhandled, so no handler starts work its caller has stopped waiting for. Callers' and
	// servers' clocks are taken to agree within a second or so, as NTP keeps them.
	DeadlineHeader = "Handoff-Deadline-Unix-Ms"
	// CodeNameHeader repeats the gRPC code of an error reply by name.
	CodeNameHeader = "Handoff-Grpc-Code"
)

const (
	// DefaultTimeout bounds a call whose context has no deadline, and a
	// request that arrives without a timeout header.
	DefaultTimeout = 5 * time.Second
	// MaxTimeout caps the deadline a handler accepts from a caller, so a
	// caller cannot pin a handler's resources indefinitely.
	MaxTimeout = 2 * time.Minute
)

// Subject returns the request subject of a method: handoff.rpc.<service>.<method>,
// e.g. Subject("catalog", "get_skus") = "handoff.rpc.catalog.get_skus".
func Subject(service, method string) string {
	return SubjectPrefix + "." + service + "." + method
}

// Side label values.
const (
	sideServer = "server"
	sideClient = "client"
)

var (
	rpcRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_rpc_requests_total",
		Help: "NATS request/reply calls by side (client, server), subject and gRPC code.",
	}, []string{"side", "subject", "code"})
	rpcDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "handoff_rpc_duration_seconds",
		Help:    "NATS request/reply latency by side (client: round trip, server: handling).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"side", "subject"})
)

// validSubjectToken reports whether a token can appear in a concrete subject.
func validSubjectToken(tok string) bool {
	return tok != "" && !strings.ContainsAny(tok, ".*> \t\r\n")
}
