package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/proto"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// DispatcherConfig configures a Dispatcher. Zero values take the defaults.
type DispatcherConfig struct {
	// Senders deliver, one per channel. Rows of a channel without a sender are marked skipped.
	Senders []Sender
	// Logger receives dead letters (warn), retries (debug) and trouble with the database
	// (warn). Nil discards.
	Logger *slog.Logger
	// PollInterval is how often the dispatcher looks for due rows without being woken by a
	// NOTIFY. Default 1s.
	PollInterval time.Duration
	// Concurrency is how many sends run at once. Default 8.
	Concurrency int
	// MaxAttempts is how many sends a notification gets before it is dead-lettered. Default 10.
	MaxAttempts int
	// InitialBackoff is the wait after the first failure; it doubles with every further
	// failure, with jitter (a random wait between half and all of it). Default 5s.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between attempts. Default 15m.
	MaxBackoff time.Duration
	// SendTimeout bounds one send. A claimed row is leased for twice this (plus 10s), so only
	// a dispatcher that died mid-send lets another copy send it again. Default 30s.
	SendTimeout time.Duration
	// PickupCode derives an order's pickup code (fulfilment's HMAC), for the shopper's own
	// email while the order can still be collected. Nil sends emails without the code.
	PickupCode func(orderID string) string
	// Retention is how long delivered and skipped rows are kept before they are deleted;
	// dead letters are kept until replayed. Default 7 days; negative keeps them forever.
	Retention time.Duration
}

func (c *DispatcherConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 10
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = 5 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 15 * time.Minute
	}
	c.MaxBackoff = max(c.MaxBackoff, c.InitialBackoff)
	if c.SendTimeout <= 0 {
		c.SendTimeout = 30 * time.Second
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
}

// Dispatcher delivers the notifications of one schema (the pool's search_path) through its
// senders. Run any number of dispatchers per schema, in any number of processes.
type Dispatcher struct {
	pool     *pgxpool.Pool
	cfg      DispatcherConfig
	log      *slog.Logger
	senders  map[string]Sender
	channels []string
	lease    time.Duration

	setupOnce sync.Once
	setupErr  error
	channel   string // NOTIFY channel
}

// NewDispatcher returns a dispatcher for the notifications in pool's schema. Configuration
// errors (two senders for one channel) are reported by Run.
func NewDispatcher(pool *pgxpool.Pool, cfg DispatcherConfig) *Dispatcher {
	cfg.setDefaults()
	d := &Dispatcher{
		pool:    pool,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "notify"),
		senders: make(map[string]Sender, len(cfg.Senders)),
		lease:   2*cfg.SendTimeout + 10*time.Second,
	}
	for _, s := range cfg.Senders {
		if _, dup := d.senders[s.Channel()]; dup {
			d.setupErr = fmt.Errorf("notify: two senders for channel %q", s.Channel())
		}
		d.senders[s.Channel()] = s
		d.channels = append(d.channels, s.Channel())
	}
	if d.channels == nil {
		d.channels = []string{} // ANY('{}') matches nothing, NULL would be an error
	}
	return d
}

var deliveries = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "handoff_notify_deliveries_total",
	Help: "Customer notification delivery outcomes by channel: sent, retry, dead, skipped.",
}, []string{"channel", "outcome"})

// Run delivers until ctx is canceled, then returns nil after the sends in flight have ended.
// It wakes on the schema's NOTIFY channel (Enqueue and replays notify on commit), when the
// next retry falls due, and every PollInterval. It returns an error only if it cannot start.
func (d *Dispatcher) Run(ctx context.Context) error {
	if err := d.setup(ctx); err != nil {
		return err
	}
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { d.listen(ctx, wake) })

	slots := make(chan struct{}, d.cfg.Concurrency)
	var lastHousekeeping time.Time
	var backoff time.Duration
	for {
		if time.Since(lastHousekeeping) >= d.cfg.PollInterval {
			d.housekeeping(ctx)
			lastHousekeeping = time.Now()
		}
		wait := d.cfg.PollInterval
		if free := cap(slots) - len(slots); free > 0 {
			claimed, err := d.claim(ctx, free)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
				d.log.Warn("notify: claiming due notifications failed; trying again", "err", err, "retry_in", backoff)
				wait = backoff
			default:
				backoff = 0
				for _, n := range claimed {
					slots <- struct{}{}
					wg.Go(func() {
						defer func() { <-slots; signal(wake) }()
						d.deliver(ctx, n)
					})
				}
				if len(claimed) == free {
					wait = 0 // slots are full; a finished send wakes us
				} else if next, ok := d.nextDue(ctx); ok {
					wait = min(wait, next)
				}
			}
		}
		if wait > 0 || len(slots) == cap(slots) {
			t := time.NewTimer(wait)
			if len(slots) == cap(slots) {
				t.Stop() // wait for a free slot (or a wake)
			}
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-wake:
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// setup learns the schema's NOTIFY channel once.
func (d *Dispatcher) setup(ctx context.Context) error {
	d.setupOnce.Do(func() {
		if d.setupErr != nil {
			return
		}
		if err := d.pool.QueryRow(ctx, `SELECT `+channelSQL).Scan(&d.channel); err != nil {
			d.setupErr = fmt.Errorf("notify: dispatcher setup: %w", err)
		}
	})
	return d.setupErr
}

// claimed is a notification this dispatcher holds the lease of.
type claimed struct {
	Notification
	attempts int // the lease token: the row's attempts after claiming
}

// claim leases up to n due rows of the channels this dispatcher serves. SKIP LOCKED lets
// dispatchers claim side by side without waiting on each other; moving next_attempt_at one
// lease ahead keeps the rows out of everyone's reach until the send is recorded.
func (d *Dispatcher) claim(ctx context.Context, n int) ([]claimed, error) {
	rows, err := d.pool.Query(ctx, `
		UPDATE notifications n
		SET attempts = n.attempts + 1, next_attempt_at = now() + $3::bigint * interval '1 microsecond'
		FROM (SELECT id FROM notifications
		      WHERE state = 'pending' AND next_attempt_at <= now() AND channel = ANY($1)
		      ORDER BY next_attempt_at LIMIT $2
		      FOR UPDATE SKIP LOCKED) due
		WHERE n.id = due.id
		RETURNING n.id::text, n.kind, n.channel, n.recipient, n.order_snapshot, n.attempts, n.create_time`,
		d.channels, n, d.lease.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("claim notifications: %w", err)
	}
	var out []claimed
	for rows.Next() {
		var c claimed
		var snap []byte
		if err := rows.Scan(&c.ID, &c.Kind, &c.Channel, &c.Recipient, &snap, &c.attempts, &c.CreateTime); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan notification: %w", err)
		}
		c.Attempt = c.attempts
		c.Order = &fulfilmentv1.Order{}
		if err := proto.Unmarshal(snap, c.Order); err != nil {
			// Delivered as a dead letter below: no attempt can read it either.
			c.Order = nil
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim notifications: %w", err)
	}
	return out, nil
}

// nextDue returns how long until the next pending row of our channels falls due.
func (d *Dispatcher) nextDue(ctx context.Context) (time.Duration, bool) {
	var us *int64
	err := d.pool.QueryRow(ctx, `
		SELECT (extract(epoch FROM min(next_attempt_at) - now()) * 1e6)::bigint
		FROM notifications WHERE state = 'pending' AND channel = ANY($1)`, d.channels).Scan(&us)
	if err != nil || us == nil {
		return 0, false
	}
	return max(time.Duration(*us)*time.Microsecond, time.Millisecond), true
}

// deliver sends one claimed notification and records the outcome.
func (d *Dispatcher) deliver(ctx context.Context, n claimed) {
	log := d.log.With("notification_id", n.ID, "order_id", n.Order.GetId(), "kind", n.Kind, "channel", n.Channel, "attempt", n.attempts)
	var err error
	if n.Order == nil {
		err = Permanent(errors.New("stored order snapshot does not decode"))
	} else {
		if n.Channel == ChannelEmail && codeKinds[n.Kind] && d.cfg.PickupCode != nil {
			n.Order.PickupCode = d.cfg.PickupCode(n.Order.GetId())
		}
		sendCtx, cancel := context.WithTimeout(ctx, d.cfg.SendTimeout)
		err = safeSend(sendCtx, d.senders[n.Channel], n.Notification)
		cancel()
	}

	// Record even when shutting down, so the row does not wait out its lease.
	recCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var q string
	var args []any
	outcome := ""
	switch {
	case err == nil:
		outcome = "sent"
		q = `UPDATE notifications SET state = 'sent', sent_time = now(), last_error = ''
			WHERE id = $1 AND attempts = $2 AND state = 'pending'`
		args = []any{n.ID, n.attempts}
	case ctx.Err() != nil:
		// Interrupted by shutdown, not the receiver's fault: due again at once for another
		// copy, and the attempt is not counted.
		outcome = "retry"
		q = `UPDATE notifications SET attempts = attempts - 1, next_attempt_at = now(), last_error = $3
			WHERE id = $1 AND attempts = $2 AND state = 'pending'`
		args = []any{n.ID, n.attempts, "interrupted by shutdown: " + err.Error()}
	case IsPermanent(err) || n.attempts >= d.cfg.MaxAttempts:
		outcome = "dead"
		q = `UPDATE notifications SET state = 'dead', fail_time = now(), last_error = $3
			WHERE id = $1 AND attempts = $2 AND state = 'pending'`
		args = []any{n.ID, n.attempts, truncate(err.Error(), 1000)}
	default:
		outcome = "retry"
		wait := d.backoff(n.attempts, retryAfterOf(err))
		q = `UPDATE notifications SET next_attempt_at = now() + $4::bigint * interval '1 microsecond', last_error = $3
			WHERE id = $1 AND attempts = $2 AND state = 'pending'`
		args = []any{n.ID, n.attempts, truncate(err.Error(), 1000), wait.Microseconds()}
		log = log.With("retry_in", wait)
	}
	deliveries.WithLabelValues(n.Channel, outcome).Inc()
	switch outcome {
	case "sent":
		log.Debug("notification delivered")
	case "dead":
		log.Warn("notification dead-lettered; an operator can replay it", "err", err, "permanent", IsPermanent(err))
	default:
		log.Debug("notification delivery failed; will retry", "err", err)
	}
	if _, rerr := d.pool.Exec(recCtx, q, args...); rerr != nil {
		// The row keeps its lease and falls due again when it ends.
		log.Warn("notify: recording delivery outcome failed; the row is retried after its lease", "outcome", outcome, "err", rerr)
	}
}

// safeSend turns a panicking sender into a retryable error instead of a dead process.
func safeSend(ctx context.Context, s Sender, n Notification) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sender %s panicked: %v", n.Channel, p)
		}
	}()
	return s.Send(ctx, n)
}

// backoff is the wait after the attempt-th failure: InitialBackoff doubled per failure, capped
// at MaxBackoff, then "equal jitter" (half fixed, half random) so that a receiver that comes back
// is not hit by every retry at the same instant; never less than what the receiver asked for.
func (d *Dispatcher) backoff(attempt int, atLeast time.Duration) time.Duration {
	b := d.cfg.InitialBackoff
	for i := 1; i < attempt && b < d.cfg.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.cfg.MaxBackoff)
	b = b/2 + rand.N(b/2+1)
	return min(max(b, atLeast), d.cfg.MaxBackoff)
}

// housekeeping marks rows of channels nobody here serves as skipped and deletes old delivered
// rows. Failures are logged; the next round tries again.
func (d *Dispatcher) housekeeping(ctx context.Context) {
	tag, err := d.pool.Exec(ctx, `
		UPDATE notifications SET state = 'skipped', sent_time = now(),
		       last_error = 'no ' || channel || ' sender configured'
		WHERE state = 'pending' AND channel <> ALL($1)`, d.channels)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("notify: skipping unserved notifications failed", "err", err)
		}
		return
	}
	if n := tag.RowsAffected(); n > 0 {
		deliveries.WithLabelValues("unconfigured", "skipped").Add(float64(n))
		d.log.Debug("notifications skipped: no sender for their channel", "count", n)
	}
	if d.cfg.Retention > 0 {
		if _, err := d.pool.Exec(ctx, `
			DELETE FROM notifications WHERE id IN (
				SELECT id FROM notifications
				WHERE state IN ('sent', 'skipped') AND sent_time < now() - $1::bigint * interval '1 microsecond'
				LIMIT 1000)`, d.cfg.Retention.Microseconds()); err != nil && ctx.Err() == nil {
			d.log.Warn("notify: deleting old delivered notifications failed", "err", err)
		}
	}
}

// listen wakes the dispatcher on every NOTIFY of the schema's channel, on a dedicated
// connection hijacked from the pool, reconnecting with backoff when it is lost.
func (d *Dispatcher) listen(ctx context.Context, wake chan<- struct{}) {
	var backoff time.Duration
	for {
		listening, err := d.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		if listening {
			backoff = 0
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
		d.log.Warn("notify: lost the LISTEN connection; polling until it is back", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (d *Dispatcher) listenOnce(ctx context.Context, wake chan<- struct{}) (listening bool, err error) {
	pc, err := d.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire LISTEN connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{d.channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("LISTEN %s: %w", d.channel, err)
	}
	signal(wake) // what was committed while nobody listened
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return true, fmt.Errorf("wait for notification: %w", err)
		}
		signal(wake)
	}
}

// signal wakes the loop without blocking; one pending wake is enough.
func signal(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") // never cut a character in half: Postgres refuses it
}
