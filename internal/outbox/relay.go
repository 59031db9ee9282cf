package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// RelayConfig tunes a Relay. Zero values take the defaults.
type RelayConfig struct {
	// Logger receives failures (warn) and per-round summaries (debug). Nil
	// discards.
	Logger *slog.Logger
	// BatchSize is the most rows one round publishes and deletes. Default 256.
	BatchSize int
	// PollInterval is how often the relay looks at the table without being
	// notified: the fallback for a lost LISTEN connection or a NOTIFY-less
	// connection pooler. Default 1s.
	PollInterval time.Duration
	// AckTimeout bounds all of one round's waits for JetStream together: the stream check,
	// atomic batches' commits and the acknowledgements of the rest. Default 10s; keep it well
	// under pgdb.IdleInTransactionTimeout, as the round's transaction stays open meanwhile.
	AckTimeout time.Duration
	// MaxBackoff caps the wait between failed rounds (it doubles from 100ms).
	// Default 10s.
	MaxBackoff time.Duration
	// Gather is how long the relay waits after a round that relayed something before it
	// starts the next, whatever wakes it meanwhile: while events trickle in and NOTIFYs come
	// often (several writing processes each NOTIFY once per NotifyGap), a round then carries
	// several events instead of one or two, for the same two round trips to Postgres and one
	// wait for JetStream. An event waits at most this much longer; a lone event not at all
	// (only a round right after one that relayed something waits), nor a backlog (a round goes
	// on while its batches come back full). Default 3ms: measured with four writing processes
	// at 700 two-event transactions a second (BenchmarkRelayGather), a third fewer rounds for
	// about 2ms more median wait; one writing process's rounds are paced by NotifyGap already.
	// Negative turns it off.
	Gather time.Duration
	// BusyGather replaces Gather after a busy round (busyRound events or more): a busy relay
	// then waits long enough for its next round to reach an atomic batch (see atomicMin), one
	// disk sync in JetStream for the round instead of one per event. Under a full-lifecycle
	// load at 64 shoppers this took tickets from 320–352 to 180–229 ms late (p50), for about 4%
	// less CPU per order; at 16 shoppers, whose orders/s the wait can lower (their rounds
	// rarely reach an atomic batch), the runs were within the noise. Default 15ms; negative
	// uses Gather.
	BusyGather time.Duration
	// FinalFlush bounds one last Flush when Run is told to stop: on a shutdown, what the
	// requests finishing in their grace committed (a confirmed order's ticket event) goes out
	// now, not at the next start or from another copy. Default 3s; negative turns it off.
	FinalFlush time.Duration
}

// DefaultFinalFlush is RelayConfig.FinalFlush's default: what a stop may add after the drain.
const DefaultFinalFlush = 3 * time.Second

// Relay publishes the outbox of one schema (the pool's search_path) to
// JetStream. Run any number of relays per schema, in any number of processes:
// a transaction-scoped advisory lock lets one publish at a time, which keeps
// the order, and the others take over when it stops.
type Relay struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	// ownJS: js is the relay's own client (see asyncPublisher), cleaned up when Run returns.
	ownJS  bool
	cfg    RelayConfig
	logger *slog.Logger

	setupMu sync.Mutex
	schema  string // current_schema() of the pool, once known
	channel string // NOTIFY channel, once known

	// onRound, when set (tests only), is called after every round with the number of events
	// it relayed.
	onRound func(n int)

	// afterPublish, when set (tests only), runs after every event of a round
	// is acknowledged and before the rows are deleted: the window in which a
	// crash leaves published rows behind. conn is in the round's transaction.
	afterPublish func(ctx context.Context, conn *pgx.Conn) error

	atomicMu sync.Mutex
	atomic   map[string]atomicCheck // by stream: whether it allows atomic batches

	// skipWake is woken when a writer of this process leaves out its NOTIFY for the relay's
	// schema (see shouldNotify).
	skipWake chan struct{}

	// The schema's metrics, once known.
	relayed  prometheus.Counter
	lag      prometheus.Observer
	failures prometheus.Counter
	refused  prometheus.Counter
}

// NewRelay returns a relay for the outbox in pool's schema, publishing through js's
// connection and API (see asyncPublisher).
func NewRelay(pool *pgxpool.Pool, js jetstream.JetStream, cfg RelayConfig) *Relay {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Gather == 0 {
		cfg.Gather = 3 * time.Millisecond
	}
	switch {
	case cfg.BusyGather == 0:
		cfg.BusyGather = 15 * time.Millisecond
	case cfg.BusyGather < 0:
		cfg.BusyGather = cfg.Gather
	}
	if cfg.FinalFlush == 0 {
		cfg.FinalFlush = DefaultFinalFlush
	}
	pub := asyncPublisher(js, cfg.AckTimeout)
	return &Relay{pool: pool, js: pub, ownJS: pub != js, cfg: cfg, logger: cfg.Logger, skipWake: make(chan struct{}, 1)}
}

// lastSkip is when a writer of this process last left out its NOTIFY for the relay's schema.
func (r *Relay) lastSkip() time.Time { return skipSignalOf(r.schema).lastFire() }

// asyncPublisher is a JetStream client of the relay's own, on js's connection and API, whose
// asynchronous publishes are forgotten after ackTimeout, as the relay forgets them. A client
// without that timeout keeps every publish whose ack never comes (a stream leader election,
// lost quorum) pending until the connection reconnects, which an embedded server's never does:
// after 4,000 of them every publish stalls, and the relay would stop for good. Its own client
// also keeps another relay's pending publishes from counting against it. Making one fails only
// without a connection, when js cannot publish either; js is kept then.
func asyncPublisher(js jetstream.JetStream, ackTimeout time.Duration) jetstream.JetStream {
	if js == nil || js.Conn() == nil {
		return js
	}
	o := js.Options()
	opts := []jetstream.JetStreamOpt{jetstream.WithPublishAsyncTimeout(ackTimeout)}
	if o.DefaultTimeout > 0 {
		opts = append(opts, jetstream.WithDefaultTimeout(o.DefaultTimeout))
	}
	var (
		own jetstream.JetStream
		err error
	)
	switch {
	case o.Domain != "":
		own, err = jetstream.NewWithDomain(js.Conn(), o.Domain, opts...)
	case o.APIPrefix != "":
		own, err = jetstream.NewWithAPIPrefix(js.Conn(), o.APIPrefix, opts...)
	default:
		own, err = jetstream.New(js.Conn(), opts...)
	}
	if err != nil {
		return js
	}
	return own
}

// fastPollFor is how long the relay keeps looking every NotifyGap after it last published.
const fastPollFor = 20 * NotifyGap

// Run relays until ctx is canceled, then makes one last bounded Flush (FinalFlush) and returns
// nil. It wakes on the schema's NOTIFY channel (listening on a dedicated connection,
// reconnected when lost), on every PollInterval, and right away after a full batch, so a
// backlog drains at full speed. After a round that relayed a few events it
// waits Gather before the next, so that a busy relay's rounds carry more. A
// failed round is retried with backoff; the rows stay in the table meanwhile.
// Run returns an error only if it cannot start.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.setup(ctx); err != nil {
		return err
	}
	if r.ownJS {
		defer r.js.CleanupPublisher() // its reply subscription, on the caller's connection
	}
	skips := skipSignalOf(r.schema)
	skips.subscribe(r.skipWake)
	defer skips.unsubscribe(r.skipWake)
	logger := r.logger.With("schema", r.schema)
	if mp := r.js.Conn().MaxPayload(); mp > 0 && mp < MaxPayload+headerRoom {
		// An event the outbox took but this server refuses would stop every event behind it.
		logger.Error("the NATS server's max_payload is below the events the outbox takes; raise it to 1MB or more (Handoff's own servers use 4MB)", "max_payload", mp, "outbox_max", MaxPayload+headerRoom)
	}

	wake := make(chan struct{}, 1)
	listenDone := make(chan struct{})
	go func() {
		defer close(listenDone)
		r.listen(ctx, wake, logger)
	}()
	defer func() { <-listenDone }()

	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	defer r.finalFlush(ctx, logger) // before the publisher is cleaned up
	var (
		backoff time.Duration
		// Writers NOTIFY at most once per NotifyGap (see Enqueue), so while events flow the
		// relay keeps looking every gap until it has seen nothing for a while: an event
		// whose writer skipped the NOTIFY waits about one gap, not a poll interval.
		fastUntil time.Time
	)
	var refusedLogged time.Time
	for {
		n, err := r.Flush(ctx)
		if err != nil && ctx.Err() == nil && onlyRefused(err) {
			// Rows NATS refuses every time stay until an operator acts; backing off for them
			// would hold up every event behind them, whose rounds go through. Said once a
			// minute, not every round.
			r.failures.Inc()
			if time.Since(refusedLogged) >= time.Minute {
				refusedLogged = time.Now()
				logger.Error("outbox: events NATS refuses stay in the outbox (raise max_payload or the stream's max_msg_size, or delete them); the others are relayed", "err", err)
			}
			err = nil
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.failures.Inc()
			if n > 0 {
				// Some of the round went out: what failed (one event a stream refuses, say)
				// must not hold back the events still coming behind it for longer and longer.
				backoff = 0
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), r.cfg.MaxBackoff)
			logger.Warn("outbox relay round failed; rows stay for the next round", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		case n > 0:
			backoff = 0
			logger.Debug("outbox relayed", "events", n)
			end := time.Now()
			fastUntil = end.Add(fastPollFor)
			gather := r.cfg.Gather
			if n >= busyRound {
				gather = r.cfg.BusyGather
			}
			if gather > 0 && !sleep(ctx, gather) {
				return nil
			}
			// The next look comes one gap after this round, or sooner when woken.
			t := time.NewTimer(max(NotifyGap-time.Since(end), 0))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-wake:
			case <-t.C:
			}
			t.Stop()
			continue
		default:
			backoff = 0
		}
		// A writer of this process that left out its NOTIFY lately (see shouldNotify) may
		// commit any moment: look every gap for a while after it, as after a round.
		if at := r.lastSkip().Add(fastPollFor); at.After(fastUntil) {
			fastUntil = at
		}
		if time.Now().Before(fastUntil) {
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
			case <-time.After(NotifyGap):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-r.skipWake:
		case <-poll.C:
		}
	}
}

// finalFlush runs one last Flush, within FinalFlush, once ctx has ended (see RelayConfig).
func (r *Relay) finalFlush(ctx context.Context, logger *slog.Logger) {
	if ctx.Err() == nil || r.cfg.FinalFlush < 0 {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.FinalFlush)
	defer cancel()
	switch n, err := r.flush(fctx, waitLockSQL); {
	case err != nil:
		logger.Warn("outbox relay's last round before stopping failed; rows stay for the next start", "err", err)
	case n > 0:
		logger.Info("outbox relayed before stopping", "events", n)
	}
}

// Flush publishes what is in the outbox now, batch after batch while batches
// come back full, and returns how many events it relayed. It relays nothing,
// without error, while another relay of the same schema holds the lock.
func (r *Relay) Flush(ctx context.Context) (int, error) { return r.flush(ctx, lockSQL) }

// flush is Flush, taking the relay lock with lock.
func (r *Relay) flush(ctx context.Context, lock string) (int, error) {
	if err := r.setup(ctx); err != nil {
		return 0, err
	}
	total := 0
	for {
		n, full, err := r.round(ctx, lock)
		if r.onRound != nil {
			r.onRound(n)
		}
		total += n
		if err != nil || !full {
			return total, err
		}
	}
}

// setup learns the pool's schema and NOTIFY channel once.
func (r *Relay) setup(ctx context.Context) error {
	r.setupMu.Lock()
	defer r.setupMu.Unlock()
	if r.schema != "" {
		return nil
	}
	if err := r.pool.QueryRow(ctx, `SELECT current_schema(), `+channelSQL).Scan(&r.schema, &r.channel); err != nil {
		return fmt.Errorf("outbox: relay setup: %w", err)
	}
	r.relayed = relayedEvents.WithLabelValues(r.schema)
	r.lag = relayLag.WithLabelValues(r.schema)
	r.failures = relayFailures.WithLabelValues(r.schema)
	r.refused = refusedEvents.WithLabelValues(r.schema) // at 0 from the start: an increase needs it
	return nil
}

type outboxRow struct {
	seq        int64
	eventID    string
	subject    string
	eventType  string
	payload    []byte
	occurredAt time.Time
	ageSeconds float64
	trace      string // the writer's traceparent, "" when it was not traced
}

// Statements of a round. The advisory lock is taken in its own statement so that the select,
// whose snapshot is taken when it starts, sees everything the previous holder deleted; its
// outcome is passed on in a transaction-local setting, so that the three can be sent at once.
const (
	lockSQL = `SELECT set_config('handoff.outbox_relay_locked',
		pg_try_advisory_xact_lock(hashtext('handoff.outbox'), hashtext(current_schema()))::text, true)`
	// waitLockSQL is lockSQL that waits for the lock: the last flush of a stopping relay must
	// not skip its round because a round of its own, cut short by the stop, still holds the
	// lock until Postgres notices its connection is gone (or another copy's round is running).
	waitLockSQL = `SELECT set_config('handoff.outbox_relay_locked', 'true', true)
		FROM (SELECT pg_advisory_xact_lock(hashtext('handoff.outbox'), hashtext(current_schema()))) AS locked`
	// No FOR UPDATE: only the lock holder reads or deletes rows, and locking each row would
	// write every row once more.
	selectBatchSQL = `SELECT seq, event_id::text, subject, event_type, payload, occurred_at,
		extract(epoch FROM clock_timestamp() - occurred_at)::float8, coalesce(trace_parent, '')
		FROM outbox WHERE current_setting('handoff.outbox_relay_locked') = 'true'
		ORDER BY seq LIMIT $1`
	deleteBatchSQL = `DELETE FROM outbox WHERE seq = ANY($1)`
)

// WaitForRelay takes, in tx, the advisory lock a relay round of tx's schema holds, waiting for
// a round under way to end, and keeps the relay from starting one until tx ends. A round reads
// its rows without locking them and deletes them once published: a transaction that rewrites
// unrelayed rows (an erasure clearing personal data from them) takes it first, or a round that
// read a row before the rewrite would publish the old payload and delete the new one.
func WaitForRelay(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('handoff.outbox'), hashtext(current_schema()))`); err != nil {
		return fmt.Errorf("outbox: wait for the relay's round: %w", err)
	}
	return nil
}

// round publishes one batch in one transaction and deletes what was acknowledged. full reports
// a full batch that was entirely relayed, i.e. there may be more right behind it. A round
// costs two round trips to Postgres: BEGIN, lock and select together, then delete and commit
// together.
func (r *Relay) round(ctx context.Context, lock string) (n int, full bool, err error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("outbox: acquire connection: %w", err)
	}
	// A connection given back inside a transaction (any failure below) is closed by the pool,
	// which rolls the transaction back.
	defer conn.Release()

	// One relay per schema at a time: the lock is held until this transaction ends, so it is
	// released by a crash too. A relay that does not get it selects nothing and skips the
	// round; the holder will see the new rows.
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(lock)
	b.Queue(selectBatchSQL, r.cfg.BatchSize)
	res := conn.SendBatch(ctx, &b)
	batch, err := readBatch(res)
	if cerr := res.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("outbox: select batch: %w", cerr)
	}
	if err != nil {
		return 0, false, err
	}
	if len(batch) == 0 {
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			return 0, false, fmt.Errorf("outbox: end empty round: %w", err)
		}
		return 0, false, nil
	}

	selectedAt := time.Now()
	ackedIdx, pubErr := r.publish(ctx, batch)
	if len(ackedIdx) > 0 {
		if r.afterPublish != nil {
			if err := r.afterPublish(ctx, conn.Conn()); err != nil {
				return 0, false, fmt.Errorf("outbox: after publish: %w", err)
			}
		}
		seqs := make([]int64, len(ackedIdx))
		for i, idx := range ackedIdx {
			seqs[i] = batch[idx].seq
		}
		var b pgx.Batch
		b.Queue(deleteBatchSQL, seqs)
		b.Queue("COMMIT")
		if err := conn.SendBatch(ctx, &b).Close(); err != nil {
			return 0, false, fmt.Errorf("outbox: delete and commit %d relayed rows: %w", len(seqs), err)
		}
		r.relayed.Add(float64(len(seqs)))
		// Lag = event's transaction start to acknowledged and marked. The
		// age part comes from the database clock, so app clock skew is out.
		sinceSelect := time.Since(selectedAt).Seconds()
		for _, idx := range ackedIdx {
			r.lag.Observe(batch[idx].ageSeconds + sinceSelect)
		}
	} else if _, err := conn.Exec(ctx, "COMMIT"); err != nil && pubErr == nil {
		pubErr = fmt.Errorf("outbox: end round: %w", err)
	}
	if pubErr != nil {
		return len(ackedIdx), false, pubErr
	}
	return len(ackedIdx), len(batch) == r.cfg.BatchSize, nil
}

// readBatch reads the results of BEGIN, the lock and the select.
func readBatch(res pgx.BatchResults) ([]outboxRow, error) {
	if _, err := res.Exec(); err != nil {
		return nil, fmt.Errorf("outbox: begin: %w", err)
	}
	if _, err := res.Exec(); err != nil {
		return nil, fmt.Errorf("outbox: advisory lock: %w", err)
	}
	rows, err := res.Query()
	if err != nil {
		return nil, fmt.Errorf("outbox: select batch: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		err := row.Scan(&o.seq, &o.eventID, &o.subject, &o.eventType, &o.payload, &o.occurredAt, &o.ageSeconds, &o.trace)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: read batch: %w", err)
	}
	return batch, nil
}

// publish sends the batch and waits, bounded, for JetStream to take it. It returns the indexes
// of the rows JetStream took, including rows it reported as duplicates: those are in the
// stream already.
//
// JetStream syncs every write to disk before acknowledging, one message after another in a
// stream, so a stream takes at most one message per disk sync: when events come faster, they
// queue, and every event waits behind the others. An atomic batch is synced once, but costs a
// staging store of its own (a directory and files, made and removed). BenchmarkSyncedPublish
// measured, on this project's 2-core machine: 110–160 µs of CPU and 200–300 µs of the
// stream's time per event one by one; 2–4.5 ms, plus about 10 µs per event, for an atomic
// batch, which breaks even at 16–32 events. So a stream's events go as an atomic batch when
// the round has atomicMin of them or more and the stream allows it; otherwise, and for an
// atomic batch the stream refused (a duplicate inside it after a crash, a server without
// atomic batches), they are published one by one without waiting in between, then their
// acknowledgements awaited. Each stream's rows go one way or the other, in order.
func (r *Relay) publish(ctx context.Context, batch []outboxRow) (acked []int, err error) {
	// Every wait of the round shares one bound, AckTimeout: the stream check, each atomic
	// batch's commit and the acknowledgements of the events sent one by one. The round holds its
	// transaction open meanwhile, and a JetStream that stalls must not keep it open past that
	// bound, one wait after another, or past the database's idle-in-transaction limit
	// (pgdb.IdleInTransactionTimeout), which would end the session.
	round, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	var (
		single  []int                // indexes to publish one by one
		atomics = map[string][]int{} // by stream: indexes, then only those for atomic batches
		order   []string             // streams, first seen first
	)
	for i, o := range batch {
		st := captured(o.subject)
		if st == "" {
			single = append(single, i)
			continue
		}
		if _, seen := atomics[st]; !seen {
			order = append(order, st)
		}
		atomics[st] = append(atomics[st], i)
	}
	for _, st := range order {
		if idx := atomics[st]; len(idx) < atomicMin || !r.atomicAllowed(round, st) {
			single = append(single, idx...)
			delete(atomics, st)
		}
	}
	slices.Sort(single)

	futures, refused, err := r.publishAsync(batch, single)
	defer func() {
		if refused != nil {
			err = errors.Join(err, &refusedError{refused})
		}
	}()
	acked = make([]int, 0, len(batch))
	for _, st := range order {
		idx, ok := atomics[st]
		if !ok || err != nil {
			continue
		}
		for chunk := range slices.Chunk(idx, maxAtomicBatch) {
			if round.Err() != nil {
				// No time left: staging a batch whose commit cannot be awaited would only leave
				// it half sent; its rows stay for the next round.
				err = fmt.Errorf("outbox: the round's %s ran out before %d events were sent", r.cfg.AckTimeout, len(chunk))
				break
			}
			if aerr := r.publishAtomic(round, batch, chunk); aerr != nil {
				r.logger.Debug("outbox: atomic batch refused; publishing its events one by one", "stream", st, "events", len(chunk), "err", aerr)
				fs, ref, perr := r.publishAsync(batch, chunk)
				futures = append(futures, fs...)
				refused = errors.Join(refused, ref)
				if perr != nil {
					err = perr
					break
				}
				continue
			}
			acked = append(acked, chunk...)
		}
	}

	for n, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, f.idx)
		case ackErr := <-f.Err():
			ackErr = fmt.Errorf("outbox: publish event %s on %s: %w", batch[f.idx].eventID, batch[f.idx].subject, ackErr)
			if errors.Is(ackErr, jetstream.ErrStreamMessageExceedsMaximum) {
				refused = errors.Join(refused, ackErr) // larger than the stream takes: every time
				r.refused.Inc()
				continue
			}
			err = errors.Join(err, ackErr)
		case <-round.Done():
			if ctx.Err() != nil {
				return acked, errors.Join(err, ctx.Err())
			}
			return acked, errors.Join(err, fmt.Errorf("outbox: no acknowledgement within %s for %d of %d events", r.cfg.AckTimeout, len(futures)-n, len(batch)))
		}
	}
	return acked, err
}

// refusedError reports the rows of a round that NATS refuses whatever the round (larger than
// the server's max_payload or the stream's largest message): they stay in the outbox for an
// operator, and the round's other rows went out.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// onlyRefused reports whether every failure err joins is a refusedError.
func onlyRefused(err error) bool {
	switch e := err.(type) {
	case *refusedError:
		return true
	case interface{ Unwrap() []error }:
		for _, one := range e.Unwrap() {
			if !onlyRefused(one) {
				return false
			}
		}
		return len(e.Unwrap()) > 0
	case interface{ Unwrap() error }:
		return onlyRefused(e.Unwrap())
	}
	return false
}

// pending is a row published on its own, waiting for its acknowledgement.
type pending struct {
	jetstream.PubAckFuture
	idx int
}

// message is the JetStream message of row o.
func message(o *outboxRow) *nats.Msg {
	// The keys are canonical already: no need for Header.Set to canonicalise each.
	m := &nats.Msg{Subject: o.subject, Data: o.payload, Header: nats.Header{
		jetstream.MsgIDHeader: {o.eventID},
		EventTypeHeader:       {o.eventType},
		OccurredAtHeader:      {o.occurredAt.UTC().Format(time.RFC3339Nano)},
	}}
	tracing.SetTraceParent(m.Header, o.trace)
	return m
}

// publishAsync publishes the rows idx of batch without waiting for their acknowledgements.
// refused reports the rows the client refused on their own, which stay in the outbox; err, a
// failure that stopped the rest.
func (r *Relay) publishAsync(batch []outboxRow, idx []int) (futures []pending, refused, err error) {
	futures = make([]pending, 0, len(idx))
	for _, i := range idx {
		f, err := r.js.PublishMsgAsync(message(&batch[i]))
		if errors.Is(err, nats.ErrMaxPayload) {
			// Larger than the server takes: it would be refused every round, and stopping here
			// would stop every event behind it for good. It stays in the outbox, counted in the
			// backlog, until an operator raises max_payload or removes it; the stream's own
			// size limit is handled the same way, through the acknowledgement.
			refused = errors.Join(refused, fmt.Errorf("outbox: publish event %s on %s: %w", batch[i].eventID, batch[i].subject, err))
			r.refused.Inc()
			continue
		}
		if err != nil {
			// Stop here: later events must not overtake this one more than they already may
			// have.
			return futures, refused, fmt.Errorf("outbox: publish event %s on %s: %w", batch[i].eventID, batch[i].subject, err)
		}
		futures = append(futures, pending{f, i})
	}
	return futures, refused, nil
}

// Atomic batches.
const (
	// atomicMin is the fewest events a relay sends as an atomic batch: a batch has a fixed cost
	// in the server (a staging store, its files, two syncs) of what 16–32 one-by-one publishes
	// cost (BenchmarkSyncedPublish); from 64 on it costs half as much CPU per event or less.
	atomicMin = 24
	// busyRound is the fewest events of a round after which the relay waits BusyGather
	// instead of Gather.
	busyRound = 8
	// maxAtomicBatch is the server's default limit on the messages of one atomic batch.
	maxAtomicBatch = 1000
	// atomicCheckEvery is how often the relay asks whether a stream allows atomic batches.
	atomicCheckEvery = time.Minute
)

// atomicAllowed reports whether stream allows atomic batch publishing, asking the server at
// most once per atomicCheckEvery. A stream the relay cannot ask about is taken not to.
func (r *Relay) atomicAllowed(ctx context.Context, stream string) bool {
	r.atomicMu.Lock()
	defer r.atomicMu.Unlock()
	if c, ok := r.atomic[stream]; ok && time.Since(c.checked) < atomicCheckEvery {
		return c.allowed
	}
	allowed := false
	actx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	if st, err := r.js.Stream(actx, stream); err == nil {
		allowed = st.CachedInfo().Config.AllowAtomicPublish
	}
	if r.atomic == nil {
		r.atomic = map[string]atomicCheck{}
	}
	r.atomic[stream] = atomicCheck{allowed: allowed, checked: time.Now()}
	return allowed
}

type atomicCheck struct {
	allowed bool
	checked time.Time
}

// atomicAck is the answer to an atomic batch's commit.
type atomicAck struct {
	Stream string `json:"stream"`
	Batch  string `json:"batch"`
	Count  int    `json:"count"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// publishAtomic publishes rows idx of batch as one atomic batch and waits, bounded, for its
// commit: after a nil error JetStream holds all of them, after an error possibly none (a
// timeout: possibly all; they are then duplicates of the next attempt).
func (r *Relay) publishAtomic(ctx context.Context, batch []outboxRow, idx []int) error {
	nc := r.js.Conn()
	id := uuid.NewString()
	last := len(idx) - 1
	for n, i := range idx[:last] {
		m := message(&batch[i])
		m.Header.Set(batchIDHeader, id)
		m.Header.Set(batchSeqHeader, strconv.Itoa(n+1))
		if err := nc.PublishMsg(m); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	m := message(&batch[idx[last]])
	m.Header.Set(batchIDHeader, id)
	m.Header.Set(batchSeqHeader, strconv.Itoa(last+1))
	m.Header.Set(batchCommitHeader, "1")
	actx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(actx, m)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	var ack atomicAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return fmt.Errorf("commit: undecodable answer %q: %w", reply.Data, err)
	}
	if ack.Error != nil {
		return fmt.Errorf("commit: %s (%d)", ack.Error.Description, ack.Error.ErrCode)
	}
	// A server that does not know atomic batches stores the commit as a plain message.
	if ack.Batch != id || ack.Count != len(idx) {
		return fmt.Errorf("commit: answer %q is not the batch's", reply.Data)
	}
	return nil
}

// Headers of atomic batch publishing (JetStream 2.12+).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// captured is the stream that stores subject, remembered per subject (a bounded map): the
// answer depends only on the topology, which is fixed at build time.
func captured(subject string) string {
	if v, ok := capturedBy.Load(subject); ok {
		return v.(string)
	}
	st := streams.Capturing(subject)
	if capturedCount.Add(1) > maxCaptured {
		capturedBy.Clear()
		capturedCount.Store(0)
	}
	capturedBy.Store(subject, st)
	return st
}

var (
	capturedBy    sync.Map // subject → stream name
	capturedCount atomic.Int64
)

// maxCaptured bounds capturedBy (subjects carry store ids).
const maxCaptured = 1 << 14

// listen wakes the relay on every NOTIFY of the schema's channel. It keeps a
// dedicated connection (hijacked from the pool, so it has the pool's
// settings) and reconnects with backoff when it is lost. After each
// successful LISTEN it wakes the relay once, to cover what was committed
// while nobody listened.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}, logger *slog.Logger) {
	var backoff time.Duration
	for {
		listening, err := r.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		if listening {
			backoff = 0
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), r.cfg.MaxBackoff)
		logger.Warn("outbox relay lost its LISTEN connection; polling until it is back", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, wake chan<- struct{}) (listening bool, err error) {
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("outbox: acquire LISTEN connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("outbox: LISTEN %s: %w", r.channel, err)
	}
	signal(wake)
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return true, fmt.Errorf("outbox: wait for notification: %w", err)
		}
		signal(wake)
	}
}

// signal wakes the relay without blocking; one pending wake is enough.
func signal(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx ends, and reports whether d passed.
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
