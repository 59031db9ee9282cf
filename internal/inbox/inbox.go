// Package inbox owns the one way a Handoff service consumes events: a durable
// JetStream pull consumer whose every message is handled in one Postgres
// transaction together with a record of the event id, so that a redelivered
// or republished event changes nothing the second time.
//
// Why: JetStream delivers at least once (a lost ack, a crash before the ack,
// a second copy of the service), and the outbox publishes at least once. The
// processed_events table (created by pgdb.Migrate in every service schema)
// turns that into an exactly-once effect: the id is inserted in the same
// transaction as the handler's writes, so either both commit or neither does.
//
//	processed_events(consumer text, event_id text, processed_at, PRIMARY KEY(consumer, event_id))
//
// The event id is the message's Nats-Msg-Id header (set by the outbox relay
// to the event's UUID). A message without one, published by something other
// than the outbox, is identified by "<stream>:<stream sequence>", which is
// stable across redeliveries of that message but not across two publishes of
// the same fact; such publishers are not idempotent and this cannot fix that.
//
// # Batches
//
// With [Config.BatchSize] above one, a worker takes up to that many messages that are already
// waiting and handles them in ONE transaction: it records all their ids with one statement,
// runs the handler for each id not recorded before, in stream order, commits, and only then
// acks them all. A redelivered batch (or any part of it) finds its ids recorded and changes
// nothing. If anything in the batch fails (a handler error or panic, a lock conflict, the
// commit), the whole transaction rolls back and the worker handles the same messages again one
// per transaction, exactly as without batching: the failing message is retried, delayed or
// terminated on its own and the others commit, each once, in order. A handler in batch mode
// shares its transaction with the other messages' handlers and must not rely on being alone in
// it (it should not, say, roll back to a savepoint it did not make). With a
// [Config.BatchHandler] the new messages of a batch are handled by one call, so a consumer can
// apply them with a few set-based statements instead of a few statements each.
//
// A handler that must act only once its effects are committed (tell this process's listeners,
// say) registers that with [OnCommit].
//
// A consumer's name ([Config.Durable]) is also its key in processed_events:
// every copy of a service uses the same durable, shares the same consumer
// (JetStream splits the messages between them) and the same processed ids.
//
// A processed id is kept as long as its stream keeps events (the stream's MaxAge, read
// hourly, and an hour more for the servers' clocks): a consumer declared anew reads the stream
// from its start, and an event found again must find its id. After that the event is gone
// from the stream and its id is deleted; a stream that keeps events forever keeps ids forever.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgtext"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// Handler applies one event inside tx. It must do all its writes through tx
// (that is what makes the effect happen once) and should not ack, nak or term
// msg itself. Returning an error rolls back and redelivers later; returning
// Permanent(err) rolls back and drops the message.
type Handler func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error

// BatchHandler applies, inside tx, the messages of a batch whose ids were not recorded before,
// in stream order: what Handler does for each of them, done together (a set-based statement
// instead of one per message). An error rolls the whole batch back, and its messages are then
// handled one per transaction by Handler, as for any failed batch; so a BatchHandler and its
// Handler must have the same effect.
type BatchHandler func(ctx context.Context, tx pgx.Tx, msgs []jetstream.Msg) error

// commitHooks collects what a handler asked to run once its transaction has committed.
type commitHooks struct{ fns []func() }

type commitHooksKey struct{}

// OnCommit runs fn once the transaction of the handler whose ctx this is has committed, and
// never if it rolls back: for what must not be seen before the commit (a ticket sent to the
// terminals of this process before anyone else could read it from the database). fn runs in
// the consumer's goroutine before the messages are acked, so it must be quick. Outside a
// handler, OnCommit does nothing and reports false.
func OnCommit(ctx context.Context, fn func()) bool {
	h, ok := ctx.Value(commitHooksKey{}).(*commitHooks)
	if ok {
		h.fns = append(h.fns, fn)
	}
	return ok
}

// withCommitHooks returns ctx for the handlers of one transaction, and a function that runs
// what they registered (to be called after a successful commit only).
func withCommitHooks(ctx context.Context) (context.Context, func()) {
	h := &commitHooks{}
	return context.WithValue(ctx, commitHooksKey{}, h), func() {
		for _, fn := range h.fns {
			fn()
		}
	}
}

// Config describes one durable consumer. Stream and Durable are required.
type Config struct {
	// Stream to consume, e.g. streams.EventsStream.
	Stream string
	// Durable names the consumer and keys its processed ids, e.g.
	// "inventory-order-events". The same in every copy of the service.
	Durable string
	// FilterSubjects selects the subjects to receive; empty means all.
	FilterSubjects []string
	// AckWait is how long JetStream waits for an ack before redelivering;
	// a handler that runs longer keeps its message with progress signals.
	// Default 30s.
	AckWait time.Duration
	// MaxDeliver caps deliveries of one message; after the last failed one
	// the message is terminated (logged at error level). Zero or less means
	// never give up: Postgres is the truth and a stuck event is an alert,
	// not something to drop silently.
	MaxDeliver int
	// Backoff is the delay before redelivering after the n-th failed
	// delivery (the last value repeats). Default 1s, 5s, 15s, 30s, 1m.
	Backoff []time.Duration
	// Concurrency is how many messages this process handles at once. One
	// (the default) handles them in stream order, except that a failed
	// message is retried after those behind it; more trade order for
	// throughput.
	Concurrency int
	// BatchSize, above one, lets a worker handle up to that many waiting messages in one
	// transaction (see Batches in the package doc); a failed batch is handled again one
	// message per transaction. Zero or one: one message per transaction.
	BatchSize int
	// BatchHandler, when set, handles the new messages of a batch (BatchSize above one)
	// together instead of the Handler once per message; Handler still handles messages one
	// by one (a batch of one, and after a failed batch).
	BatchHandler BatchHandler
	// Logger receives retries (warn) and terminations (error). Nil discards.
	Logger *slog.Logger
}

var defaultBackoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute}

var (
	inboxMessages = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_inbox_messages_total",
		Help: "Consumed messages by consumer and result (processed, duplicate, retried, terminated).",
	}, []string{"consumer", "result"})
	inboxHandleSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "handoff_inbox_handle_seconds",
		Help:    "Time to handle one message, transaction included, by consumer.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"consumer"})
	inboxBatches = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_inbox_batches_total",
		Help: "Batches of several messages by consumer and result (committed, fallback: handled again one by one).",
	}, []string{"consumer", "result"})
	inboxBatchMessages = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "handoff_inbox_batch_messages",
		Help:    "Messages per transaction in batch mode, by consumer.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
	}, []string{"consumer"})
)

// Permanent marks err as one that retrying cannot fix (a malformed payload,
// an event about something that can never exist). The message is terminated
// and the error logged at error level. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Decode unmarshals msg's payload into into. A payload of another type
// (per the Handoff-Event-Type header) or one that does not decode is a
// Permanent error: redelivering it cannot help.
func Decode(msg jetstream.Msg, into proto.Message) error {
	want := string(into.ProtoReflect().Descriptor().FullName())
	if got := msg.Headers().Get(outbox.EventTypeHeader); got != "" && got != want {
		return Permanent(fmt.Errorf("inbox: message on %s is a %s, not a %s", msg.Subject(), got, want))
	}
	if err := proto.Unmarshal(msg.Data(), into); err != nil {
		return Permanent(fmt.Errorf("inbox: decode %s from %s: %w", want, msg.Subject(), err))
	}
	return nil
}

// EventID returns the id under which msg is recorded as processed: its
// Nats-Msg-Id header, or "<stream>:<stream sequence>" without one.
func EventID(msg jetstream.Msg) (string, error) {
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id, nil
	}
	meta, err := msg.Metadata()
	if err != nil {
		return "", fmt.Errorf("inbox: message on %s has neither a Nats-Msg-Id nor JetStream metadata: %w", msg.Subject(), err)
	}
	return meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10), nil
}

// Run creates or updates the durable consumer and handles its messages with h
// until ctx is canceled, then waits for the messages in hand and returns nil.
// It returns an error only if it cannot start (bad config, no stream) or the
// NATS connection is closed for good. If the consumer disappears while
// running (deleted by an operator), Run declares it again and carries on.
func Run(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, cfg Config, h Handler) error {
	c, err := newConsumer(pool, cfg, h)
	if err != nil {
		return err
	}
	cons, err := c.ensure(ctx, js)
	if err != nil {
		return err
	}
	pruneCtx, stopPruning := context.WithCancel(ctx)
	pruned := make(chan struct{})
	go func() {
		defer close(pruned)
		c.runPrune(pruneCtx, js)
	}()
	defer func() {
		stopPruning()
		<-pruned
	}()
	var backoff time.Duration
	for {
		started, handled := time.Now(), c.handled.Load()
		err := c.consume(ctx, cons)
		if ctx.Err() != nil {
			return nil
		}
		if js.Conn().IsClosed() {
			return fmt.Errorf("inbox: consumer %s: NATS connection closed", cfg.Durable)
		}
		if time.Since(started) >= healthySession || c.handled.Load() != handled {
			backoff = 0 // the session worked: a new blip starts again from the shortest wait
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
		c.logger.Warn("inbox: consuming stopped; declaring the consumer again", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
		if next, err := c.ensure(ctx, js); err != nil {
			c.logger.Warn("inbox: declare consumer", "err", err)
		} else {
			cons = next
		}
	}
}

// healthySession is how long a consume session must have run, if it handled no message, for
// its end to count as a new blip, not the same trouble again: the wait before declaring the
// consumer again then starts from the shortest.
const healthySession = 10 * time.Second

type consumer struct {
	pool    *pgxpool.Pool
	cfg     Config
	handler Handler
	logger  *slog.Logger
	handled atomic.Int64 // messages handed to the handler, for Run's backoff
}

func newConsumer(pool *pgxpool.Pool, cfg Config, h Handler) (*consumer, error) {
	if cfg.Stream == "" || cfg.Durable == "" {
		return nil, errors.New("inbox: Config.Stream and Config.Durable are required")
	}
	if h == nil {
		return nil, fmt.Errorf("inbox: consumer %s: nil handler", cfg.Durable)
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = -1
	}
	if len(cfg.Backoff) == 0 {
		cfg.Backoff = defaultBackoff
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// Every result's series is on /metrics from the start, at 0: an alert on the first
	// terminated message (increase(…) > 0) sees it grow, where a series born at 1 shows none.
	for _, result := range []string{"processed", "duplicate", "retried", "terminated"} {
		inboxMessages.WithLabelValues(cfg.Durable, result)
	}
	return &consumer{
		pool:    pool,
		cfg:     cfg,
		handler: h,
		logger:  cfg.Logger.With("stream", cfg.Stream, "consumer", cfg.Durable),
	}, nil
}

// cutShortDeliveries is how many deliveries of one message, past MaxDeliver, JetStream still
// makes: a delivery cut short (handed back at shutdown, or never answered by a process killed)
// did not fail, yet JetStream counts it, and after its last one delivers the message no more.
// Without them an event in hand at a deploy on its last delivery was dropped, neither handled
// nor terminated. handle itself terminates a message at the MaxDeliver-th failure.
const cutShortDeliveries = 3

// serverMaxDeliver is the consumer's MaxDeliver for a configured one (-1: no limit).
func serverMaxDeliver(max int) int {
	if max <= 0 {
		return -1
	}
	return max + cutShortDeliveries
}

// ensure declares the durable pull consumer. Every copy of the service
// declares the same configuration, which JetStream accepts as a no-op.
func (c *consumer) ensure(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	cc := jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxDeliver:    serverMaxDeliver(c.cfg.MaxDeliver),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	// One filter goes in FilterSubject, which every server version
	// understands; several need FilterSubjects (server 2.10+).
	switch len(c.cfg.FilterSubjects) {
	case 0:
	case 1:
		cc.FilterSubject = c.cfg.FilterSubjects[0]
	default:
		cc.FilterSubjects = c.cfg.FilterSubjects
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, cc)
	if errors.Is(err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported) {
		// The server answers the first update of a consumer it recovered from its store with
		// the configuration it recovered (nats-server's initial consumer info), so an update
		// from one filter to several looks refused although it was made (an upgrade after the
		// server restarted). Its answer to the same declaration again is the consumer as it is.
		cons, err = js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, cc)
	}
	if err != nil {
		return nil, fmt.Errorf("inbox: declare consumer %s on stream %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	return cons, nil
}

// Pruning processed ids.
const (
	pruneEvery = time.Hour
	// pruneClockSlack is kept beyond the stream's MaxAge: the stream ages events by the NATS
	// server's clock, processed_at is Postgres's.
	pruneClockSlack = time.Hour
	pruneBatch      = 5000
	// refreshAfter is how long after an id's processing a copy of its event found again moves
	// the id's time to now. The outbox publishes an event again when its row outlived the
	// publish (a delete that did not commit); past the stream's duplicate window (two minutes)
	// that copy is stored anew, and its id must be kept until the copy too has aged out, or a
	// consumer declared anew would apply it a second time. Copies seen sooner keep the time:
	// the slack above covers them, and a redelivery costs no write.
	refreshAfter = 10 * time.Minute
)

// recordSQL records ids $2 of consumer $1, in id order (so that two copies recording
// overlapping batches take the primary key's locks in the same order), and returns each with
// whether it is new: an id recorded before is locked (a concurrent delivery of it waits), and
// its time moved to now when refreshAfter has passed, so that prune keeps it while a copy found
// again may still be in the stream; one refreshed comes back as not new (xmax is the updating
// transaction's), one within refreshAfter not at all.
var recordSQL = fmt.Sprintf(`INSERT INTO processed_events (consumer, event_id)
	SELECT $1, id FROM unnest($2::text[]) AS u(id) ORDER BY id
	ON CONFLICT (consumer, event_id) DO UPDATE SET processed_at = now()
	WHERE processed_events.processed_at < now() - interval '%d seconds'
	RETURNING event_id, xmax = 0`, int(refreshAfter.Seconds()))

// record runs recordSQL for ids (sorted and unique) in tx and returns those new.
func (c *consumer) record(ctx context.Context, tx pgx.Tx, ids []string) (map[string]bool, error) {
	rows, err := tx.Query(ctx, recordSQL, c.cfg.Durable, ids)
	if err != nil {
		return nil, fmt.Errorf("inbox: record event ids: %w", err)
	}
	isNew := make(map[string]bool, len(ids))
	var (
		id       string
		inserted bool
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &inserted}, func() error {
		if inserted {
			isNew[id] = true
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("inbox: record event ids: %w", err)
	}
	return isNew, nil
}

// runPrune deletes the consumer's processed ids its stream no longer holds events for, at
// start and then every pruneEvery, until ctx ends. Every copy does: their deletes of the same
// rows are harmless.
func (c *consumer) runPrune(ctx context.Context, js jetstream.JetStream) {
	for {
		if _, err := c.prune(ctx, js); err != nil && ctx.Err() == nil {
			c.logger.Warn("inbox: pruning processed event ids failed; trying again later", "consumer", c.cfg.Durable, "err", err)
		}
		if !sleep(ctx, pruneEvery) {
			return
		}
	}
}

// pruneSQL deletes up to $3 of consumer $1's processed ids older than $2 microseconds, found
// through processed_events_by_age (pgdb's shared migration SharedPruneIndexVersion).
const pruneSQL = `DELETE FROM processed_events WHERE ctid = ANY (ARRAY(
	SELECT ctid FROM processed_events WHERE consumer = $1 AND processed_at < now() - $2::bigint * interval '1 microsecond' LIMIT $3))`

// prune deletes, pruneBatch rows at a time, the consumer's processed ids older than its
// stream's MaxAge and pruneClockSlack, and returns how many it deleted.
func (c *consumer) prune(ctx context.Context, js jetstream.JetStream) (int64, error) {
	st, err := js.Stream(ctx, c.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", c.cfg.Stream, err)
	}
	maxAge := st.CachedInfo().Config.MaxAge
	if maxAge <= 0 {
		return 0, nil
	}
	var n int64
	for {
		tag, err := c.pool.Exec(ctx, pruneSQL, c.cfg.Durable, (maxAge + pruneClockSlack).Microseconds(), pruneBatch)
		if err != nil {
			return n, fmt.Errorf("delete processed ids: %w", err)
		}
		n += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			return n, nil
		}
	}
}

// A consume session's pull requests last pullExpiry, and while one waits the server sends a
// heartbeat every pullHeartbeat: two missed end the session, and Run declares the consumer
// again. That is the only sign of a consumer gone with nobody told (deleted while a pull was on
// its way); nats.go's defaults (15 s, missed twice) held events back half a minute. Idle, each
// session costs one small message per heartbeat.
const (
	pullExpiry    = 15 * time.Second
	pullHeartbeat = 3 * time.Second
)

// consume runs one Consume session until ctx ends (nil) or the session stops
// by itself (the reason, if known), and returns once every message it
// started is handled.
func (c *consumer) consume(ctx context.Context, cons jetstream.Consumer) error {
	if c.cfg.BatchSize > 1 {
		return c.consumeBatches(ctx, cons)
	}
	sem := make(chan struct{}, c.cfg.Concurrency)
	var (
		mu       sync.Mutex
		closing  bool // set once the session ends; later callbacks hand back
		inFlight sync.WaitGroup
		lastErr  error
	)
	dispatch := func(msg jetstream.Msg) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			// Shutting down: hand it back at once for another copy.
			_ = msg.Nak()
			return
		}
		mu.Lock()
		if closing {
			mu.Unlock()
			<-sem
			_ = msg.Nak()
			return
		}
		inFlight.Add(1)
		mu.Unlock()
		go func() {
			defer inFlight.Done()
			defer func() { <-sem }()
			c.handle(ctx, msg)
		}()
	}
	cc, err := cons.Consume(dispatch,
		// A small buffer: a buffered message's ack wait is already running.
		jetstream.PullMaxMessages(max(16, 4*c.cfg.Concurrency)),
		jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat),
		c.onConsumeError(&mu, &lastErr),
	)
	if err != nil {
		return fmt.Errorf("inbox: consume %s: %w", c.cfg.Durable, err)
	}
	select {
	case <-ctx.Done():
		stopConsuming(cc)
	case <-cc.Closed():
	}
	mu.Lock()
	closing = true
	mu.Unlock()
	inFlight.Wait()
	mu.Lock()
	defer mu.Unlock()
	if lastErr == nil {
		lastErr = errors.New("consume session ended")
	}
	return lastErr
}

// handle applies one message exactly once and acks, naks or terms it.
func (c *consumer) handle(ctx context.Context, msg jetstream.Msg) {
	c.handled.Add(1)
	start := time.Now()
	result := "processed"
	defer func() {
		inboxMessages.WithLabelValues(c.cfg.Durable, result).Inc()
		inboxHandleSeconds.WithLabelValues(c.cfg.Durable).Observe(time.Since(start).Seconds())
	}()

	var delivered uint64 = 1
	if meta, err := msg.Metadata(); err == nil {
		delivered = meta.NumDelivered
	}
	eventID, err := EventID(msg)
	if err != nil {
		result = "terminated"
		c.logger.Error("inbox: dropping message without an identity", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("no event id")
		return
	}
	logger := c.logger.With("event_id", eventID, "subject", msg.Subject(), "delivery", delivered)

	// Tell JetStream we're still at it, so a slow handler is not handed
	// to another copy meanwhile.
	stopProgress := keepInProgress([]jetstream.Msg{msg}, c.cfg.AckWait/3)
	ctx, span := c.startOne(ctx, msg)
	duplicate, err := c.apply(ctx, eventID, msg)
	tracing.EndProcessing(span, err)
	stopProgress()

	var settleErr error
	switch {
	case err == nil && duplicate:
		result = "duplicate"
		settleErr = msg.Ack()
	case err == nil:
		settleErr = msg.Ack()
	case ctx.Err() != nil:
		// Shutting down mid-handler: rolled back; redeliver at once.
		result = "retried"
		settleErr = msg.Nak()
	case IsPermanent(err):
		result = "terminated"
		logger.Error("inbox: event cannot be handled; terminated", "err", err)
		settleErr = msg.TermWithReason(pgtext.Clip(err.Error(), 256))
	case c.cfg.MaxDeliver > 0 && delivered >= uint64(c.cfg.MaxDeliver):
		result = "terminated"
		logger.Error("inbox: event failed on its last delivery; terminated", "err", err, "max_deliver", c.cfg.MaxDeliver)
		settleErr = msg.TermWithReason("max deliveries: " + pgtext.Clip(err.Error(), 200))
	default:
		result = "retried"
		delay := c.cfg.Backoff[min(int(delivered)-1, len(c.cfg.Backoff)-1)]
		logger.Warn("inbox: handler failed; will redeliver", "err", err, "retry_in", delay)
		settleErr = msg.NakWithDelay(delay)
	}
	if settleErr != nil {
		// JetStream redelivers after AckWait; a processed event is then
		// skipped as a duplicate, so this costs time, not correctness.
		logger.Warn("inbox: settle message", "result", result, "err", settleErr)
	}
}

// apply runs the handler in a transaction that also records the event id.
// duplicate reports an id that was already recorded: nothing was done.
func (c *consumer) apply(ctx context.Context, eventID string, msg jetstream.Msg) (duplicate bool, err error) {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("inbox: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // no-op after commit

	// A concurrent delivery of the same id waits here on the primary key
	// until the first commits (then sees a duplicate) or rolls back.
	isNew, err := c.record(ctx, tx, []string{eventID})
	if err != nil {
		return false, err
	}
	if !isNew[eventID] {
		// Seen before; its time, if moved, is committed (the rollback after is a no-op).
		if err := tx.Commit(ctx); err != nil {
			return false, fmt.Errorf("inbox: commit: %w", err)
		}
		return true, nil
	}
	hctx, afterCommit := withCommitHooks(ctx)
	if err := c.callHandler(hctx, tx, msg); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("inbox: commit: %w", err)
	}
	afterCommit()
	return false, nil
}

// callHandler turns a panic into an error so that one bad event rolls back
// and is retried instead of taking the process down.
func (c *consumer) callHandler(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("inbox: handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return c.handler(ctx, tx, msg)
}

// callBatchHandler is callHandler for the batch handler.
func (c *consumer) callBatchHandler(ctx context.Context, tx pgx.Tx, msgs []jetstream.Msg) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("inbox: batch handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return c.cfg.BatchHandler(ctx, tx, msgs)
}

// keepInProgress sends progress signals for msgs every interval until stopped.
func keepInProgress(msgs []jetstream.Msg, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(max(interval, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, msg := range msgs {
					_ = msg.InProgress()
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished // no progress signal may follow the ack
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// consumeBatches is consume in batch mode: the session's callback queues messages, and
// Concurrency workers each take what is waiting, up to BatchSize, as one batch.
func (c *consumer) consumeBatches(ctx context.Context, cons jetstream.Consumer) error {
	queue := make(chan jetstream.Msg, c.cfg.BatchSize*c.cfg.Concurrency)
	stop := make(chan struct{})
	var (
		mu         sync.Mutex
		closing    bool
		dispatches sync.WaitGroup
		workers    sync.WaitGroup
		lastErr    error
	)
	dispatch := func(msg jetstream.Msg) {
		mu.Lock()
		if closing {
			mu.Unlock()
			_ = msg.Nak()
			return
		}
		dispatches.Add(1)
		mu.Unlock()
		defer dispatches.Done()
		select {
		case queue <- msg:
		case <-stop:
			_ = msg.Nak()
		}
	}
	for range c.cfg.Concurrency {
		workers.Go(func() {
			for {
				var first jetstream.Msg
				select {
				case <-stop:
					return
				case first = <-queue:
				}
				batch := []jetstream.Msg{first}
			fill:
				for len(batch) < c.cfg.BatchSize {
					select {
					case m := <-queue:
						batch = append(batch, m)
					default:
						break fill
					}
				}
				c.handleBatch(ctx, batch)
			}
		})
	}
	cc, err := cons.Consume(dispatch,
		// A buffer about one batch per worker deep: a buffered message's ack wait is running.
		jetstream.PullMaxMessages(max(16, 2*c.cfg.BatchSize*c.cfg.Concurrency)),
		jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat),
		c.onConsumeError(&mu, &lastErr),
	)
	if err != nil {
		close(stop)
		workers.Wait()
		return fmt.Errorf("inbox: consume %s: %w", c.cfg.Durable, err)
	}
	select {
	case <-ctx.Done():
		stopConsuming(cc)
	case <-cc.Closed():
	}
	mu.Lock()
	closing = true
	mu.Unlock()
	close(stop)
	dispatches.Wait()
	workers.Wait() // each finishes the batch in hand
	for {
		select {
		case m := <-queue: // queued but never started: hand back for another copy
			_ = m.Nak()
			continue
		default:
		}
		break
	}
	mu.Lock()
	defer mu.Unlock()
	if lastErr == nil {
		lastErr = errors.New("consume session ended")
	}
	return lastErr
}

// handleBatch applies msgs in one transaction and acks them all, or, if that fails, handles
// each on its own as handle does.
func (c *consumer) handleBatch(ctx context.Context, msgs []jetstream.Msg) {
	c.handled.Add(int64(len(msgs)))
	if len(msgs) == 1 {
		c.handle(ctx, msgs[0])
		return
	}
	start := time.Now()
	ids := make([]string, 0, len(msgs))
	keep := msgs[:0:0]
	for _, msg := range msgs {
		id, err := EventID(msg)
		if err != nil {
			c.handle(ctx, msg) // terminates it, as always
			continue
		}
		ids = append(ids, id)
		keep = append(keep, msg)
	}
	msgs = keep
	if len(msgs) == 0 {
		return
	}
	stopProgress := keepInProgress(msgs, c.cfg.AckWait/3)
	bctx, spans := c.startProcessing(ctx, msgs)
	done, err := c.applyBatch(bctx, ids, msgs)
	stopProgress()
	if err != nil {
		inboxBatches.WithLabelValues(c.cfg.Durable, "fallback").Inc()
		if ctx.Err() != nil {
			spans.end(err)
			for _, msg := range msgs {
				inboxMessages.WithLabelValues(c.cfg.Durable, "retried").Inc()
				_ = msg.Nak() // shutting down: rolled back; redeliver at once
			}
			return
		}
		c.logger.Warn("inbox: batch failed; handling its messages one by one", "messages", len(msgs), "err", err)
		for _, msg := range msgs {
			c.handle(bctx, msg) // each message's span goes on, and ends with its handling alone
		}
		return
	}
	spans.end(nil)
	inboxBatches.WithLabelValues(c.cfg.Durable, "committed").Inc()
	inboxBatchMessages.WithLabelValues(c.cfg.Durable).Observe(float64(len(msgs)))
	elapsed := time.Since(start).Seconds()
	for i, msg := range msgs {
		result := "duplicate"
		if done[i] {
			result = "processed"
		}
		inboxMessages.WithLabelValues(c.cfg.Durable, result).Inc()
		inboxHandleSeconds.WithLabelValues(c.cfg.Durable).Observe(elapsed)
		if err := msg.Ack(); err != nil {
			// Redelivered after AckWait and then skipped as a duplicate.
			c.logger.Warn("inbox: settle message", "result", result, "event_id", ids[i], "err", err)
		}
	}
}

// processing holds the processing spans of a batch's messages (tracing on only): each message
// continues the trace of the work that wrote its event, though they are handled together.
type processing struct {
	ctxs  map[jetstream.Msg]context.Context
	spans []trace.Span
}

type processingKey struct{}

// startProcessing starts a processing span for each of msgs; ctx itself with tracing off.
func (c *consumer) startProcessing(ctx context.Context, msgs []jetstream.Msg) (context.Context, *processing) {
	if !tracing.Enabled() {
		return ctx, nil
	}
	p := &processing{ctxs: make(map[jetstream.Msg]context.Context, len(msgs)), spans: make([]trace.Span, 0, len(msgs))}
	for _, msg := range msgs {
		mctx, span := tracing.StartProcessing(ctx, c.cfg.Durable, msg.Subject(), msg.Headers())
		p.ctxs[msg] = mctx
		p.spans = append(p.spans, span)
	}
	return context.WithValue(ctx, processingKey{}, p), p
}

// startOne starts msg's processing span, or takes up the one its batch started (bctx): a
// message of a failed batch, handled alone, has one span for both tries.
func (c *consumer) startOne(ctx context.Context, msg jetstream.Msg) (context.Context, trace.Span) {
	if p, ok := ctx.Value(processingKey{}).(*processing); ok {
		if mctx, ok := p.ctxs[msg]; ok {
			span := trace.SpanFromContext(mctx)
			span.AddEvent("its batch failed: handled alone")
			return mctx, span
		}
	}
	return tracing.StartProcessing(ctx, c.cfg.Durable, msg.Subject(), msg.Headers())
}

func (p *processing) end(err error) {
	if p == nil {
		return
	}
	for _, span := range p.spans {
		tracing.EndProcessing(span, err)
	}
}

// MessageContext is a batch handler's ctx carrying the processing span of msg, one of its
// batch: what the handler writes for msg (its events) then continues msg's trace. ctx itself
// when tracing is off (and for a handler of one message, whose ctx carries its span already).
func MessageContext(ctx context.Context, msg jetstream.Msg) context.Context {
	p, ok := ctx.Value(processingKey{}).(*processing)
	if !ok {
		return ctx
	}
	mctx, ok := p.ctxs[msg]
	if !ok {
		return ctx
	}
	return tracing.WithSpanContext(ctx, tracing.SpanContext(mctx))
}

// TraceParent is the traceparent of msg's processing span, for the events a batch handler
// writes for msg (outbox.Event.TraceParent); "" when tracing is off.
func TraceParent(ctx context.Context, msg jetstream.Msg) string {
	if !tracing.Enabled() {
		return ""
	}
	return tracing.TraceParent(MessageContext(ctx, msg))
}

// applyBatch records ids (those of msgs, in order) and runs the handler for each message whose
// id was new, in order, all in one transaction. done[i] reports that msgs[i] was handled now
// (false: its id was recorded before, or earlier in this batch).
func (c *consumer) applyBatch(ctx context.Context, ids []string, msgs []jetstream.Msg) (done []bool, err error) {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("inbox: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // no-op after commit

	// Sorted and unique, so that two copies recording overlapping batches take the
	// primary key's locks in the same order.
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	isNew, err := c.record(ctx, tx, sorted)
	if err != nil {
		return nil, err
	}
	hctx, afterCommit := withCommitHooks(ctx)
	done = make([]bool, len(msgs))
	var fresh []jetstream.Msg
	for i, msg := range msgs {
		if !isNew[ids[i]] {
			continue
		}
		isNew[ids[i]] = false // a second copy of it in this batch is a duplicate
		done[i] = true
		if c.cfg.BatchHandler != nil {
			fresh = append(fresh, msg)
			continue
		}
		if err := c.callHandler(hctx, tx, msg); err != nil {
			return nil, fmt.Errorf("inbox: event %s on %s: %w", ids[i], msg.Subject(), err)
		}
	}
	if len(fresh) > 0 {
		if err := c.callBatchHandler(hctx, tx, fresh); err != nil {
			return nil, fmt.Errorf("inbox: batch of %d events: %w", len(fresh), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("inbox: commit: %w", err)
	}
	afterCommit()
	return done, nil
}

// onConsumeError keeps a consume session's last error for the caller, and ends the session
// when the consumer may be gone (the caller declares it again): deleted, not found, or pulls
// that nobody answers and heartbeats that stop, as after a NATS server came back without its
// JetStream store (a pod without its volume): the stream is declared again on reconnect, but
// the consumer only here. Declaring it again when it is there changes nothing.
func (c *consumer) onConsumeError(mu *sync.Mutex, lastErr *error) jetstream.PullConsumeOpt {
	return jetstream.ConsumeErrHandler(func(cc jetstream.ConsumeContext, err error) {
		mu.Lock()
		*lastErr = err
		mu.Unlock()
		switch {
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			// The consumer may well be there (heartbeats held up by a cluster's election): the
			// messages in hand are handled, not dropped to wait out their ack wait.
			cc.Drain()
			return
		case errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
			errors.Is(err, nats.ErrNoResponders):
			cc.Stop()
			return
		}
		c.logger.Warn("inbox: consume", "err", err)
	})
}

// stopConsuming ends a consume session by draining it: the server drops the pull subscription
// before this returns, and messages already on their way are still dispatched (and, the
// session ending, handed back with a nak). Stopping instead drops them in the client, where
// they wait out their ack wait before anyone gets them again, behind later events.
func stopConsuming(cc jetstream.ConsumeContext) {
	cc.Drain()
	<-cc.Closed()
}
