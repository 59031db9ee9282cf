// Package outbox owns the transactional outbox: how a service records a domain
// event in the same Postgres transaction as the state change it describes
// ([Enqueue]), and how those events reach JetStream ([Relay]).
//
// Why: a service must never change state without telling the others, nor tell
// them about a change that rolled back. Writing the event to the outbox table
// in the caller's transaction makes "state changed" and "event exists" one
// atomic fact; the relay then publishes at least once. JetStream drops a second
// copy with the same Nats-Msg-Id (= event id) inside its duplicate window
// (two minutes, see package streams), and consumers (package inbox) record
// processed event ids, so at-least-once publishing becomes exactly-once effect.
//
// The table, created by pgdb.Migrate in every service schema:
//
//	outbox(seq bigserial PK, event_id uuid UNIQUE, subject, event_type, payload bytea, occurred_at)
//
// Order: the relay publishes in seq order, one relay per schema at a time. Seq
// is assigned at insert, not at commit, so two unrelated transactions may
// commit out of seq order and be published in commit order instead; events
// about the same entity are written under that entity's row lock and so keep
// their order. After a failed publish the rows that were not acknowledged are
// sent again in the next round, possibly after later events of the same batch
// that were acknowledged; consumers therefore treat order as a strong hint
// and state (versions, timestamps) as the truth.
//
// Crash semantics: if the relay dies after publishing and before deleting the
// published rows, its transaction rolls back, the rows stay, and the next relay
// publishes them again with the same Nats-Msg-Id. Inside the duplicate window
// JetStream drops them; beyond it, consumers are idempotent by event id anyway.
package outbox

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// Headers set on every relayed message, besides Nats-Msg-Id (= event id).
const (
	// EventTypeHeader holds the protobuf full name of the payload, e.g.
	// handoff.fulfilment.v1.OrderConfirmed.
	EventTypeHeader = "Handoff-Event-Type"
	// OccurredAtHeader holds the time the event was recorded (its
	// transaction's start), RFC 3339 with nanoseconds, UTC.
	OccurredAtHeader = "Handoff-Occurred-At"
)

// channelSQL derives the NOTIFY channel from the schema, so relays of different
// services sharing one database wake only for their own events. Channel names
// are limited to 63 bytes; a longer schema name is hashed.
const channelSQL = `CASE WHEN octet_length('handoff_outbox_' || current_schema()) <= 63
	THEN 'handoff_outbox_' || current_schema()
	ELSE 'handoff_outbox_' || md5(current_schema()) END`

// enqueueNotifySQL inserts the event and notifies the relay in one round trip.
// NOTIFY is transactional: the relay hears it only once the caller commits,
// and not at all on rollback. Identical notifications in one transaction are
// folded into one, so a transaction that enqueues many events wakes the relay
// once.
const enqueueNotifySQL = `WITH ins AS (
	INSERT INTO outbox (event_id, subject, event_type, payload, trace_parent) VALUES ($1, $2, $3, $4, NULLIF($5, ''))
	ON CONFLICT (event_id) DO NOTHING
	RETURNING seq)
SELECT pg_notify(` + channelSQL + `, '') FROM ins`

// enqueueSQL inserts the event without waking the relay (see NotifyGap).
const enqueueSQL = `INSERT INTO outbox (event_id, subject, event_type, payload, trace_parent) VALUES ($1, $2, $3, $4, NULLIF($5, ''))
	ON CONFLICT (event_id) DO NOTHING`

// NotifyGap spaces the NOTIFYs one process sends per event source. A transaction that
// NOTIFYs takes a lock that is global to the PostgreSQL server and holds it through its
// commit's disk flush, so a NOTIFY on every event would make every event-writing commit on the
// server wait in one line. Instead a writer NOTIFYs only when the last NOTIFY for its events
// is older than the gap; the relay, after any round that published, looks again one gap later.
// An event thus waits at most about one gap, and the lock is taken a few dozen times a second
// instead of once per event.
const NotifyGap = 15 * time.Millisecond

// lastNotify holds, per event source (the subject's service token), when this process last
// enqueued with a NOTIFY, in UnixNano.
var lastNotify sync.Map // string → *atomic.Int64

// shouldNotify reports whether an event on subject, written in tx, should wake the relay now,
// and claims the slot if so. When it says no, the relays of this process that relay tx's schema
// are told (skipSignal): the transaction that has the slot may roll back, or commit after this
// one, and its NOTIFY goes with it. With no such relay here (a process that writes events it
// does not relay, or a pool not from pgdb.Open), it says yes after all: nobody else would be told.
func shouldNotify(tx pgx.Tx, subject string) bool {
	source := sourceOf(subject)
	v, _ := lastNotify.LoadOrStore(source, new(atomic.Int64))
	last := v.(*atomic.Int64)
	now := time.Now().UnixNano()
	prev := last.Load()
	if now-prev >= int64(NotifyGap) && last.CompareAndSwap(prev, now) {
		return true
	}
	return !skipSignalOf(txSchema(tx)).fire(now)
}

// schemaNamer is a pgx.Tx that names the schema its statements will run in (see InSchema).
type schemaNamer interface{ outboxSchema() string }

// InSchema is tx naming schema as the one its statements will run in: for a writer that
// only queues them (a pgx.Batch behind a pgx.Tx, with no connection yet), so that its skipped
// NOTIFYs still wake this process's relays of schema (see shouldNotify).
func InSchema(tx pgx.Tx, schema string) pgx.Tx { return schemaTx{Tx: tx, schema: schema} }

type schemaTx struct {
	pgx.Tx
	schema string
}

func (t schemaTx) outboxSchema() string { return t.schema }

// txSchema is the schema tx writes in, or "" when it cannot tell.
func txSchema(tx pgx.Tx) string {
	if s, ok := tx.(schemaNamer); ok {
		return s.outboxSchema()
	}
	return pgdb.SchemaOf(tx.Conn())
}

// sourceOf is the event source of subject: its service token (handoff.<service>...).
func sourceOf(subject string) string {
	if parts := strings.SplitN(subject, ".", 3); len(parts) >= 2 {
		return parts[1]
	}
	return subject
}

// skipSignals holds a skipSignal per schema.
var skipSignals sync.Map // string → *skipSignal

func skipSignalOf(schema string) *skipSignal {
	if v, ok := skipSignals.Load(schema); ok {
		return v.(*skipSignal)
	}
	v, _ := skipSignals.LoadOrStore(schema, new(skipSignal))
	return v.(*skipSignal)
}

// skipSignal tells the idle relays of this process that relay a schema's outbox when a writer
// left out its NOTIFY; they then look every gap for a while (fastPollFor), as after a round
// that published, so the event waits about one gap, not a poll interval, whatever became of
// the NOTIFY it counted on. It fires at most once per NotifyGap, so a busy writer pays an
// atomic load per event.
type skipSignal struct {
	last atomic.Int64 // UnixNano of the last fire
	mu   sync.Mutex
	subs []chan struct{} // relays' wake-ups, each of capacity 1
	// watched: subs is not empty (read without mu on a writer's path).
	watched atomic.Bool
}

// fire reports whether a relay of this process watches the schema (and so is, or was just,
// told).
func (s *skipSignal) fire(now int64) bool {
	prev := s.last.Load()
	if now-prev < int64(NotifyGap) || !s.last.CompareAndSwap(prev, now) {
		return s.watched.Load()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.subs) == 0 {
		return false
	}
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return true
}

func (s *skipSignal) subscribe(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, ch)
	s.watched.Store(true)
}

func (s *skipSignal) unsubscribe(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = slices.DeleteFunc(s.subs, func(c chan struct{}) bool { return c == ch })
	s.watched.Store(len(s.subs) > 0)
}

// lastFire is when a writer last left out its NOTIFY (as fired).
func (s *skipSignal) lastFire() time.Time { return time.Unix(0, s.last.Load()) }

var (
	relayedEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_outbox_relayed_events_total",
		Help: "Outbox events published to JetStream and acknowledged, by schema.",
	}, []string{"schema"})
	relayLag = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "handoff_outbox_relay_lag_seconds",
		Help:    "Time from an event's transaction start until JetStream acknowledged it and the relay marked it, by schema.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"schema"})
	relayFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_outbox_relay_failures_total",
		Help: "Relay rounds that failed (publish, ack or database error) and will be retried, by schema.",
	}, []string{"schema"})
	// refusedEvents tells the outbox's two ways of growing old apart: no relay running (this
	// stays) and an event NATS refuses every time (this grows at every round while the rest
	// are relayed).
	refusedEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_outbox_refused_events_total",
		Help: "Events NATS refused to take (larger than the server's max_payload or the stream's max_msg_size), once per round that tried them; they stay in the outbox, by schema.",
	}, []string{"schema"})
)

// Enqueue records msg as an event on subject in tx, with a fresh time-ordered
// event id (UUIDv7), and returns that id. The event is published only if tx
// commits. subject must be a concrete subject some Handoff stream stores (see
// streams.EventSubject and streams.TicketSubject).
func Enqueue(ctx context.Context, tx pgx.Tx, subject string, msg proto.Message) (eventID string, err error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("outbox: new event id: %w", err)
	}
	if err := EnqueueWithID(ctx, tx, id.String(), subject, msg); err != nil {
		return "", err
	}
	return id.String(), nil
}

// EnqueueWithID is Enqueue with an event id chosen by the caller, for events
// that must have one identity however often the code that writes them runs
// (see [DeterministicID]). An id already in the outbox is not written twice.
// eventID must be a UUID.
func EnqueueWithID(ctx context.Context, tx pgx.Tx, eventID, subject string, msg proto.Message) error {
	id, err := uuid.Parse(eventID)
	if err != nil {
		return fmt.Errorf("outbox: event id %q is not a UUID: %w", eventID, err)
	}
	if err := checkSubject(subject); err != nil {
		return err
	}
	payload, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("outbox: marshal %s for %s: %w", msg.ProtoReflect().Descriptor().FullName(), subject, err)
	}
	eventType := string(msg.ProtoReflect().Descriptor().FullName())
	if err := checkSize(eventType, subject, payload); err != nil {
		return err
	}
	sql := enqueueSQL
	if shouldNotify(tx, subject) {
		sql = enqueueNotifySQL
	}
	if _, err := tx.Exec(ctx, sql, id.String(), subject, eventType, payload, tracing.TraceParent(ctx)); err != nil {
		return fmt.Errorf("outbox: enqueue %s on %s: %w", eventType, subject, err)
	}
	return nil
}

// Event is one event for [EnqueueBatch].
type Event struct {
	// ID is the event id, a UUID (see [EnqueueWithID]).
	ID string
	// Subject is where it is published (see [Enqueue]).
	Subject string
	// Msg is the payload.
	Msg proto.Message
	// TraceParent is the traceparent of the work that wrote it (tracing.TraceParent), when that
	// is not the context EnqueueBatch is given (a batch's, writing for many requests).
	TraceParent string
}

// enqueueBatchSQL inserts many events in their order with one statement, and notifies the relay
// once when it must (see NotifyGap).
const enqueueBatchSQL = `INSERT INTO outbox (event_id, subject, event_type, payload, trace_parent)
	SELECT id, subject, event_type, payload, NULLIF(trace_parent, '')
	FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[]) WITH ORDINALITY AS e(id, subject, event_type, payload, trace_parent, n)
	ORDER BY n
	ON CONFLICT (event_id) DO NOTHING`

const enqueueBatchNotifySQL = `WITH ins AS (` + enqueueBatchSQL + ` RETURNING seq)
SELECT pg_notify(` + channelSQL + `, '') WHERE EXISTS (SELECT 1 FROM ins)`

// EnqueueBatch is EnqueueWithID for many events in one statement (one round trip however many
// there are), recorded in their order. Ids already in the outbox are not written twice.
func EnqueueBatch(ctx context.Context, tx pgx.Tx, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	var (
		ids      = make([]string, len(events))
		subjects = make([]string, len(events))
		types    = make([]string, len(events))
		payloads = make([][]byte, len(events))
		traces   = make([]string, len(events))
		notify   bool
		ctxTrace = tracing.TraceParent(ctx)
	)
	for i, ev := range events {
		id, err := uuid.Parse(ev.ID)
		if err != nil {
			return fmt.Errorf("outbox: event id %q is not a UUID: %w", ev.ID, err)
		}
		if err := checkSubject(ev.Subject); err != nil {
			return err
		}
		types[i] = string(ev.Msg.ProtoReflect().Descriptor().FullName())
		if payloads[i], err = proto.Marshal(ev.Msg); err != nil {
			return fmt.Errorf("outbox: marshal %s for %s: %w", types[i], ev.Subject, err)
		}
		if err := checkSize(types[i], ev.Subject, payloads[i]); err != nil {
			return err
		}
		ids[i], subjects[i], traces[i] = id.String(), ev.Subject, ev.TraceParent
		if traces[i] == "" {
			traces[i] = ctxTrace
		}
		if shouldNotify(tx, ev.Subject) {
			notify = true
		}
	}
	sql := enqueueBatchSQL
	if notify {
		sql = enqueueBatchNotifySQL
	}
	if _, err := tx.Exec(ctx, sql, ids, subjects, types, payloads, traces); err != nil {
		return fmt.Errorf("outbox: enqueue %d events (first %s on %s): %w", len(events), types[0], subjects[0], err)
	}
	return nil
}

// handoffEventNamespace scopes DeterministicID's name-based UUIDs.
var handoffEventNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://handoff.dev/events"))

// DeterministicID returns a name-based UUID (version 5) for an event that is
// identified by what happened rather than by when it was written, e.g.
// DeterministicID("order", orderID, "confirmed"). The same parts always give
// the same id, so JetStream and the consumers treat a rewrite as a duplicate.
func DeterministicID(parts ...string) string {
	return uuid.NewSHA1(handoffEventNamespace, []byte(strings.Join(parts, "\x00"))).String()
}

// MaxPayload is the largest event the outbox takes: what fits, with the headers the relay adds
// (message id, event type, occurrence time), in NATS's default max_payload of 1 MiB (Handoff's
// own servers allow 4 MB), so an event fits any server it may be relayed to. The server counts
// headers and payload together: an event of the whole 1 MiB was taken here and then refused at
// every relay round. Handoff's events are far smaller (their fields are bounded at the edges);
// one that is not would stop every event behind it, so it is refused at write time instead.
const MaxPayload = 1<<20 - headerRoom

// headerRoom is what MaxPayload leaves of 1 MiB for the relay's headers: about 150 bytes and
// the event type's name.
const headerRoom = 4 << 10

// checkSize refuses, at write time, an event too large to be published.
func checkSize(eventType, subject string, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("outbox: %s on %s is %d bytes, more than the %d an event may have", eventType, subject, len(payload), MaxPayload)
	}
	return nil
}

// checkSubject refuses, at write time, a subject the relay could never
// deliver: a published message no stream captures is rejected by JetStream,
// and such a row would stop every event behind it.
func checkSubject(subject string) error {
	for _, tok := range strings.Split(subject, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("outbox: subject %q is not a concrete NATS subject", subject)
		}
	}
	if captured(subject) == "" {
		return fmt.Errorf("outbox: no stream stores subject %q (want handoff.<service>.<entity>.<event> or handoff.store.<id>.ticket.<kind>)", subject)
	}
	return nil
}
