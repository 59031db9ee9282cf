package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/pgtext"
	"github.com/handoff-dev/handoff/internal/rounds"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// DispatcherConfig configures a Dispatcher. Zero values take the defaults.
type DispatcherConfig struct {
	// Senders deliver, one per channel. Rows of a channel without a sender here are left to
	// the copies that have one; they are marked skipped only once no copy has served the
	// channel for servedGrace (see heartbeatEvery).
	Senders []Sender
	// Logger receives dead letters (warn), retries (debug) and trouble with the database
	// (warn). Nil discards.
	Logger *slog.Logger
	// PollInterval is how often the dispatcher looks for due rows, NOTIFY or not, while
	// notifications are pending (sends in flight, retries waiting: a copy that scheduled a
	// retry may have gone away) or while its LISTEN connection is down. It is also the least
	// time between two rounds of a dispatcher without senders, whose only work is marking rows
	// skipped. Default 1s.
	PollInterval time.Duration
	// IdlePollInterval is how often a dispatcher with nothing pending looks anyway: the safety
	// net for a notification whose writer left the NOTIFY to another transaction that then
	// rolled back (see Enqueue). Default 10s.
	IdlePollInterval time.Duration
	// UnservedWait is how long a notification of a channel no copy serves waits before it is
	// marked skipped: a copy that has the sender may be starting, its first heartbeat not yet
	// recorded (a new deployment, its copies started in any order). Default 10 minutes.
	UnservedWait time.Duration
	// RoundInterval is the least time between two claiming rounds: the wake-ups that come
	// meanwhile are served by one round, so a busy dispatcher claims in batches. It adds at
	// most this much to a notification's wait. Default 10ms.
	RoundInterval time.Duration
	// Concurrency is how many sends of each channel run at once. Each channel has send slots
	// of its own, so a receiver that hangs or fails slowly holds back only its own channel's
	// notifications; at most Concurrency times the number of senders run at once. Default 8.
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
	// OrderEnded names the state of an order that has ended ("" while it is open, or unknown),
	// from fulfilment's orders: an email carrying the pickup code is not sent for an order
	// that has ended. Nil looks for the order's end notification instead, which retention
	// keeps while such an email of the order may still be sent.
	OrderEnded func(ctx context.Context, orderID string) (string, error)
	// Retention is how long delivered and skipped rows are kept before they are deleted.
	// Default 7 days; negative keeps them forever.
	Retention time.Duration
	// DeadRetention is how long a dead letter is kept for an operator to replay before it is
	// deleted (by the same passes as Retention's). Default 30 days; negative keeps them
	// forever.
	DeadRetention time.Duration
}

func (c *DispatcherConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.IdlePollInterval <= 0 {
		c.IdlePollInterval = 10 * time.Second
	}
	if c.UnservedWait <= 0 {
		c.UnservedWait = servedGrace
	}
	if c.RoundInterval <= 0 {
		c.RoundInterval = 10 * time.Millisecond
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
	if c.DeadRetention == 0 {
		c.DeadRetention = 30 * 24 * time.Hour
	}
}

// Dispatcher delivers the notifications of one schema (the pool's search_path) through its
// senders. Run any number of dispatchers per schema, in any number of processes.
type Dispatcher struct {
	pool     *pgxpool.Pool
	cfg      DispatcherConfig
	log      *slog.Logger
	senders  map[string]Sender
	channels []string // served here
	lease    time.Duration

	setupOnce sync.Once
	setupErr  error
	channel   string // NOTIFY channel

	// worked is set when rows were sent, dead-lettered or skipped: only then can the
	// retention pass find something to delete (eventually).
	worked atomic.Bool
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

// Every channel's outcomes are on /metrics from the start, at 0: an alert on the first dead
// letter (increase(…{outcome="dead"}) > 0) sees it grow, where a series born at 1 shows none.
func init() {
	for _, ch := range []string{ChannelWebhook, ChannelEmail} {
		for _, outcome := range []string{"sent", "retry", "dead", "skipped"} {
			deliveries.WithLabelValues(ch, outcome)
		}
	}
	deliveries.WithLabelValues("unconfigured", "skipped")
}

// Follow-up rounds after a NOTIFY. A writer leaves the NOTIFY out when its Writer sent one
// less than notifyGap ago (see Enqueue), so the rows it wrote are found by a round after the
// NOTIFY: one once the writers' gap has passed, and one later for a transaction that took
// long to commit. IdlePollInterval covers what is slower still.
const (
	followUp     = 2 * notifyGap
	lateFollowUp = 20 * notifyGap
)

// Run delivers until ctx is canceled, then returns nil after the sends in flight have ended
// and their outcomes are recorded. It returns an error only if it cannot start.
//
// Each channel has Concurrency send slots of its own. A round is one statement: it claims the
// due rows of each channel served here that has a free slot, as many as it has free, oldest
// first; marks due rows of the channels no copy serves skipped (those another copy serves are
// left to it); and learns when each channel's next pending row falls due. Rounds happen when a
// NOTIFY comes (Enqueue, replays; see followUp for the writers that leave it out), when a row
// of a channel with a free slot falls due, when a send frees a slot of a channel whose due rows
// waited for one, and every PollInterval while rows are pending; never more often than
// RoundInterval (PollInterval without senders). A
// dispatcher with nothing pending and nothing arriving sends no statement for
// IdlePollInterval.
func (d *Dispatcher) Run(ctx context.Context) error {
	if err := d.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: not a failure to start
		}
		return err
	}
	hints := make(chan struct{}, 1)
	var listening atomic.Bool
	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Go(func() { d.listen(ctx, hints, &listening) })
	bg.Go(func() { d.runRetention(ctx) })
	bg.Go(func() { d.runHeartbeat(ctx) })

	rec := newRecorder(d)
	bg.Go(rec.run)
	var sends sync.WaitGroup
	defer func() {
		sends.Wait()
		rec.close() // after the last send: it records what they handed over, then ends
	}()

	lanes := make(map[string]*lane, len(d.channels))
	for _, ch := range d.channels {
		lanes[ch] = &lane{slots: make(chan struct{}, d.cfg.Concurrency)}
	}
	freed := make(chan struct{}, 1)
	s := rounds.Schedule{Gap: d.cfg.RoundInterval}
	if len(d.channels) == 0 {
		s.Gap = d.cfg.PollInterval // marking rows skipped is not worth a quicker round
	}
	// hint is the last NOTIFY (or the start); rounds follow it up for rows written without one.
	hint := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		// The channels with a free slot, and how many each has: a round claims those.
		open, free := []string{}, []int{}
		for _, ch := range d.channels {
			if n := lanes[ch].free(); n > 0 {
				open, free = append(open, ch), append(free, n)
			}
		}
		// Without senders a round only marks rows skipped, which needs no slot.
		canClaim := len(open) > 0 || len(lanes) == 0
		at, wanted := s.Next(hint, hint.Add(followUp), hint.Add(lateFollowUp))
		if wanted && !at.After(now) {
			if !canClaim {
				for _, l := range lanes {
					l.more = true // a finished send frees a slot and wakes us
				}
			} else {
				claimed, info, err := d.round(ctx, open, free)
				switch {
				case ctx.Err() != nil:
					return nil
				case err != nil:
					d.log.Warn("notify: round failed; trying again", "err", err, "retry_in", s.Failed(time.Now()))
					continue
				}
				// A channel whose every free slot was filled (or that had none) may have left
				// due rows behind: the next of its slots to come free wants a round. Until then
				// its due rows want none, or a channel whose receiver hangs would have rounds
				// run for it back to back while the others' sends go on.
				for _, l := range lanes {
					l.more = true
				}
				counts := make(map[string]int, len(open))
				for _, n := range claimed {
					counts[n.Channel]++
				}
				for i, ch := range open {
					lanes[ch].more = counts[ch] == free[i]
				}
				due, nextDue := false, time.Duration(0)
				for ch, next := range info.nextDue {
					if l := lanes[ch]; l != nil && l.more {
						continue
					}
					if !due || next < nextDue {
						due, nextDue = true, next
					}
				}
				s.Done(now, time.Now(), due, nextDue, false)
				if info.pending || !listening.Load() {
					s.Poll = now.Add(d.cfg.PollInterval)
				} else {
					s.Poll = now.Add(d.cfg.IdlePollInterval)
				}
				if info.skipped > 0 {
					d.worked.Store(true)
					deliveries.WithLabelValues("unconfigured", "skipped").Add(float64(info.skipped))
					d.log.Debug("notifications skipped: no sender for their channel", "count", info.skipped)
				}
				for _, n := range claimed {
					slots := lanes[n.Channel].slots
					slots <- struct{}{}
					sends.Go(func() {
						defer func() { <-slots; signal(freed) }()
						rec.add(d.deliver(ctx, n))
					})
				}
				continue
			}
		}

		var fire <-chan time.Time
		if wanted && canClaim {
			timer.Reset(at.Sub(now))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-hints:
			hint = time.Now()
		case <-freed:
			for _, l := range lanes {
				if l.more && l.free() > 0 {
					l.more, s.Kick = false, time.Now()
				}
			}
		case <-rec.retries.C():
			s.RetryAt(rec.retries.Take())
		case <-fire:
		}
		timer.Stop()
	}
}

// setup learns the schema's NOTIFY channel, once, and
// stamps the channels served here before the first round (see heartbeatEvery).
func (d *Dispatcher) setup(ctx context.Context) error {
	d.setupOnce.Do(func() {
		if d.setupErr != nil {
			return
		}
		if err := d.pool.QueryRow(ctx, `SELECT `+channelSQL).Scan(&d.channel); err != nil {
			d.setupErr = fmt.Errorf("notify: dispatcher setup: %w", err)
			return
		}
		if err := d.heartbeat(ctx); err != nil {
			d.setupErr = fmt.Errorf("notify: dispatcher setup: %w", err)
		}
	})
	return d.setupErr
}

// lane is one channel's send slots in Run's loop.
type lane struct {
	slots chan struct{} // one per send in flight
	// more: the last round filled every free slot of the channel (or it had none), so due
	// rows may wait for a slot; the next one to come free wants a round.
	more bool
}

func (l *lane) free() int { return cap(l.slots) - len(l.slots) }

// claimed is a notification this dispatcher holds the lease of.
type claimed struct {
	Notification
	attempts int // the lease token: the row's attempts after claiming
}

// roundInfo is what a round learnt besides the rows it claimed.
type roundInfo struct {
	skipped int64
	pending bool // some row is pending (not counting the ones just claimed or skipped)
	// nextDue is, by channel, until the earliest of those rows falls due (≤ 0: due already);
	// the channels not served here are under "".
	nextDue map[string]time.Duration
}

// roundSQL is a round in one statement. It claims, for each channel in $1, up to as many due
// rows as $2 gives it, oldest first: SKIP LOCKED lets dispatchers claim side by side, and moving
// next_attempt_at one lease ($4) ahead keeps the rows out of everyone's reach until the send is
// recorded. It marks due rows skipped whose channel nobody serves: of the channels with pending
// rows, the ones not served here ($3) nor by another copy within the grace ($5 µs; see
// heartbeatEvery), once a row has waited DispatcherConfig.UnservedWait ($6 µs). Its last
// rows (id NULL) tell how many were skipped and, per channel served here ($3) and for the
// unserved ones together (channel NULL), when the next pending row falls due; those subqueries
// see the rows as they were before the statement, so the ones claimed or skipped here are left
// out by id. Rows of a channel another copy serves are not this dispatcher's business at all.
//
// Every look at the rows is by one channel (notifications_due_by_channel): a channel whose
// receiver hangs keeps its lane full and its due rows piling up, and a look that walked them
// would make every round of the other channels cost as much as that backlog.
const roundSQL = `
WITH RECURSIVE pending_channels AS (
	-- The channels with pending rows, one index probe each (a loose scan of
	-- notifications_due_by_channel), whatever wrote them: a build that added a channel and was
	-- rolled back, a row written by hand.
	SELECT min(channel) AS channel FROM notifications WHERE state = 'pending'
	UNION ALL
	SELECT (SELECT min(n.channel) FROM notifications n WHERE n.state = 'pending' AND n.channel > p.channel)
	FROM pending_channels p WHERE p.channel IS NOT NULL),
due AS MATERIALIZED (
	SELECT d.id FROM unnest($1::text[], $2::int[]) AS c(channel, n)
	CROSS JOIN LATERAL (
		SELECT id FROM notifications
		WHERE state = 'pending' AND channel = c.channel AND next_attempt_at <= now() AND NOT ` + behindSQL + `
		ORDER BY next_attempt_at LIMIT c.n
		FOR UPDATE SKIP LOCKED) d),
claimed AS (
	UPDATE notifications n
	SET attempts = n.attempts + 1, next_attempt_at = now() + $4::bigint * interval '1 microsecond',
		sending_until = now() + $4::bigint * interval '1 microsecond'
	WHERE n.id = ANY (ARRAY(SELECT id FROM due)) -- by the key, not a join that may read the table
	RETURNING n.id, n.kind, n.channel, n.recipient, n.order_snapshot, n.attempts, n.create_time),
unserved_channels AS MATERIALIZED (
	SELECT u.channel FROM pending_channels u
	WHERE u.channel IS NOT NULL AND u.channel <> ALL($3) AND NOT EXISTS (
		SELECT 1 FROM notification_channels s
		WHERE s.channel = u.channel AND s.served_time > now() - $5::bigint * interval '1 microsecond')),
unserved AS MATERIALIZED (
	SELECT d.id FROM unserved_channels u
	CROSS JOIN LATERAL (
		SELECT id FROM notifications
		WHERE state = 'pending' AND channel = u.channel AND ` + waitedSQL + `
		FOR UPDATE SKIP LOCKED) d),
skipped AS (
	UPDATE notifications n
	SET state = 'skipped', sent_time = now(), last_error = 'no ' || n.channel || ' sender configured'
	WHERE n.id = ANY (ARRAY(SELECT id FROM unserved))
	RETURNING 1)
SELECT id::text, kind, channel, recipient, order_snapshot, attempts, create_time, NULL::bigint, NULL::bigint
FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM skipped), NULL
UNION ALL
SELECT NULL, NULL, c.channel, NULL, NULL, NULL, NULL, NULL, (extract(epoch FROM nx.at - now()) * 1e6)::bigint
FROM unnest($3::text[]) AS c(channel)
CROSS JOIN LATERAL (
	SELECT next_attempt_at AS at FROM notifications
	WHERE state = 'pending' AND channel = c.channel AND id NOT IN (SELECT id FROM due) AND NOT ` + behindSQL + `
	ORDER BY next_attempt_at LIMIT 1) nx
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, (extract(epoch FROM min(nx.at) - now()) * 1e6)::bigint
FROM unserved_channels u
CROSS JOIN LATERAL (
	SELECT next_attempt_at AS at FROM notifications
	WHERE state = 'pending' AND channel = u.channel AND ` + waitedSQL + `
		AND id NOT IN (SELECT id FROM unserved) AND NOT ` + behindSQL + `
	ORDER BY next_attempt_at LIMIT 1) nx
HAVING min(nx.at) IS NOT NULL`

// behindSQL holds for an email (a notifications row) while an earlier email of its order (a
// lower order version) is being sent: claimed, its outcome not recorded, its lease not over.
// Such an email is not claimed, nor counted as due (the earlier one's end is found by the
// PollInterval look that pending rows get). Sent side by side, the two could reach the
// shopper in either order ("cancelled", then "confirmed" with the pickup code): the stale
// check (supersededBy) sees only later emails, so it stops an earlier one only when the
// later one was written before the earlier one was sent.
const behindSQL = `(notifications.channel = 'email' AND notifications.order_version > 0 AND EXISTS (
		SELECT 1 FROM notifications e
		WHERE e.order_id = notifications.order_id AND e.channel = notifications.channel AND e.state = 'pending'
			AND e.order_version > 0 AND e.order_version < notifications.order_version AND e.sending_until > now()))`

// waitedSQL holds for a row of a channel nobody serves that has waited
// DispatcherConfig.UnservedWait ($6 µs): since it was written, and since it was last due (a row
// tried before its channel lost its last sender). The second bounds the look by the index.
const waitedSQL = `next_attempt_at <= now() - $6::bigint * interval '1 microsecond'
		AND create_time < now() - $6::bigint * interval '1 microsecond'`

// round claims, for each of channels, up to the matching count of due rows (see roundSQL).
func (d *Dispatcher) round(ctx context.Context, channels []string, counts []int) ([]claimed, roundInfo, error) {
	info := roundInfo{nextDue: map[string]time.Duration{}}
	rows, err := d.pool.Query(ctx, roundSQL, channels, counts, d.channels, d.lease.Microseconds(), servedGrace.Microseconds(),
		d.cfg.UnservedWait.Microseconds())
	if err != nil {
		return nil, info, fmt.Errorf("claim notifications: %w", err)
	}
	defer rows.Close()
	var out []claimed
	for rows.Next() {
		var (
			id, kind, channel, recipient *string
			snap                         []byte
			attempts                     *int32
			created                      *time.Time
			skipped, nextUS              *int64
		)
		if err := rows.Scan(&id, &kind, &channel, &recipient, &snap, &attempts, &created, &skipped, &nextUS); err != nil {
			return nil, info, fmt.Errorf("scan notification: %w", err)
		}
		if id == nil {
			if skipped != nil {
				info.skipped = *skipped
			}
			if nextUS != nil {
				ch := ""
				if channel != nil {
					ch = *channel
				}
				info.pending, info.nextDue[ch] = true, time.Duration(*nextUS)*time.Microsecond
			}
			continue
		}
		c := claimed{Notification: Notification{
			ID: *id, Kind: *kind, Channel: *channel, Recipient: *recipient, Attempt: int(*attempts), CreateTime: *created,
		}, attempts: int(*attempts)}
		c.Order = &fulfilmentv1.Order{}
		if err := proto.Unmarshal(snap, c.Order); err != nil {
			// Delivered as a dead letter below: no attempt can read it either.
			c.Order = nil
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, info, fmt.Errorf("claim notifications: %w", err)
	}
	return out, info, nil
}

// deliver sends one claimed notification and returns the outcome to record.
func (d *Dispatcher) deliver(ctx context.Context, n claimed) outcome {
	log := d.log.With("notification_id", n.ID, "order_id", n.Order.GetId(), "kind", n.Kind, "channel", n.Channel, "attempt", n.attempts)
	var err error
	if why := d.stale(ctx, n, log); why != "" {
		deliveries.WithLabelValues(n.Channel, "skipped").Inc()
		log.Info("notification not sent: " + why)
		return outcome{id: n.ID, token: n.attempts, attempts: n.attempts, state: "skipped", lastError: "not sent: " + why}
	}
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

	o := outcome{id: n.ID, token: n.attempts, attempts: n.attempts, state: "pending"}
	label := "retry"
	switch {
	case err == nil:
		o.state, label = "sent", "sent"
		log.Debug("notification delivered")
	case ctx.Err() != nil:
		// Interrupted by shutdown, not the receiver's fault: due again at once for another
		// copy, and the attempt is not counted.
		o.attempts--
		o.lastError = pgtext.Clip("interrupted by shutdown: "+err.Error(), 1000)
		o.handOver = true
		log.Debug("notification send interrupted by shutdown", "err", err)
	case IsPermanent(err) || n.attempts >= d.cfg.MaxAttempts:
		o.state, label = "dead", "dead"
		o.lastError = pgtext.Clip(err.Error(), 1000)
		log.Warn("notification dead-lettered; an operator can replay it", "err", err, "permanent", IsPermanent(err))
	default:
		o.wait = d.backoff(n.attempts, retryAfterOf(err))
		o.lastError = pgtext.Clip(err.Error(), 1000)
		log.Debug("notification delivery failed; will retry", "err", err, "retry_in", o.wait)
	}
	deliveries.WithLabelValues(n.Channel, label).Inc()
	return o
}

// endKinds announce an order's end: no notification of it follows one of them.
var endKinds = []string{KindCollected, KindCancelled, KindExpired, KindRejected}

// stale says why an email must not go out any more, or "" when it may. Emails are retried and
// replayed, so one can come due long after it was written:
//   - one telling the shopper the order can still be collected (codeKinds: a reminder or
//     "ready" retried after a refusal, or a dead letter replayed days later) whose order has
//     ended since would send the shopper, pickup code in hand, to collect an order released or
//     already collected (endedSince);
//   - one of an earlier order version than an email sent, or on its way (due, in flight or
//     retrying), would arrive out of order ("confirmed, we will tell you when it is ready"
//     after "ready"; supersededBy): the later one tells the shopper where the order stands.
//     Two due together may be sent in parallel, so the earlier gives way to a later one still
//     pending too, not only to one already sent.
//
// A webhook goes out all the same: its receiver keeps the highest order version (package
// doc). A failed check sends the email, as before the check existed.
func (d *Dispatcher) stale(ctx context.Context, n claimed, log *slog.Logger) string {
	if n.Channel != ChannelEmail || n.Order == nil {
		return ""
	}
	if codeKinds[n.Kind] {
		ended, err := d.endedSince(ctx, n)
		if err != nil {
			log.Warn("notify: could not check whether the order has ended since; sending", "err", err)
		} else if ended != "" {
			return "the order has ended since (" + ended + "), which the shopper is told instead"
		}
	}
	later, err := d.supersededBy(ctx, n)
	if err != nil {
		log.Warn("notify: could not check for a later email of the order; sending", "err", err)
	} else if later != "" {
		return "a later email of the order (" + later + ") is sent or on its way"
	}
	return ""
}

// endedSince names the end of n's order ("" while it is open): as fulfilment's orders have it
// (DispatcherConfig.OrderEnded); without that, a notification of the order's end on n's
// channel, which retention keeps while a code-carrying email of the order may still be
// replayed (retentionSQL).
func (d *Dispatcher) endedSince(ctx context.Context, n claimed) (string, error) {
	if d.cfg.OrderEnded != nil {
		return d.cfg.OrderEnded(ctx, n.Order.GetId())
	}
	var ended string
	err := d.pool.QueryRow(ctx, `SELECT kind FROM notifications WHERE order_id = $1 AND channel = $2 AND kind = ANY($3) LIMIT 1`,
		n.Order.GetId(), n.Channel, endKinds).Scan(&ended)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("look for the end of order %s: %w", n.Order.GetId(), err)
	}
	return ended, nil
}

// supersededBy names the notification of a later version of n's order sent, or still to be
// sent, on n's channel, if any ("" if none). Rows of unknown version (0) are never compared.
func (d *Dispatcher) supersededBy(ctx context.Context, n claimed) (string, error) {
	v := n.Order.GetVersion()
	if v <= 0 {
		return "", nil
	}
	var kind string
	var later int64
	err := d.pool.QueryRow(ctx, `SELECT kind, order_version FROM notifications
		WHERE order_id = $1 AND channel = $2 AND state IN ('sent', 'pending') AND order_version > $3
		ORDER BY order_version DESC LIMIT 1`, n.Order.GetId(), n.Channel, v).Scan(&kind, &later)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("look for later emails of order %s: %w", n.Order.GetId(), err)
	}
	return fmt.Sprintf("%s, version %d", kind, later), nil
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

// Retention passes: at start, then every retentionEvery once something was delivered, skipped
// or dead-lettered, each deleting old rows retentionBatch at a time until fewer are left.
const (
	retentionEvery = time.Minute
	retentionBatch = 5000
)

// retentionSQL deletes up to $2 rows in the states spliced in as %[1]s (literals, so that the
// partial index of those states serves) whose time column %[2]s is older than $1 µs. An email
// ($5) of an order's end ($3) is kept while an email of the order that carries the pickup code
// ($4) may still be sent (pending, or dead and replayable): without fulfilment's orders table,
// it is what tells the dispatcher that the order has ended (endedSince).
const retentionSQL = `
DELETE FROM notifications WHERE id IN (
	SELECT id FROM notifications n
	WHERE n.state IN (%[1]s) AND n.%[2]s < now() - $1::bigint * interval '1 microsecond'
		AND NOT (n.channel = $5 AND n.kind = ANY($3) AND EXISTS (
			SELECT 1 FROM notifications c
			WHERE c.order_id = n.order_id AND c.channel = n.channel AND c.state IN ('pending', 'dead') AND c.kind = ANY($4)))
	LIMIT $2)`

// runRetention deletes delivered and skipped rows older than Retention and dead letters older
// than DeadRetention. Failures are logged; the next pass tries again.
func (d *Dispatcher) runRetention(ctx context.Context) {
	type sweep struct {
		what string
		sql  string
		keep time.Duration
	}
	var sweeps []sweep
	if d.cfg.Retention > 0 {
		sweeps = append(sweeps, sweep{"delivered", fmt.Sprintf(retentionSQL, "'sent', 'skipped'", "sent_time"), d.cfg.Retention})
	}
	if d.cfg.DeadRetention > 0 {
		sweeps = append(sweeps, sweep{"dead", fmt.Sprintf(retentionSQL, "'dead'", "fail_time"), d.cfg.DeadRetention})
	}
	if len(sweeps) == 0 {
		return
	}
	codes := make([]string, 0, len(codeKinds))
	for k := range codeKinds {
		codes = append(codes, k)
	}
	t := time.NewTicker(retentionEvery)
	defer t.Stop()
	for first := true; ; first = false {
		if first || d.worked.Swap(false) {
			for _, sw := range sweeps {
				for ctx.Err() == nil {
					tag, err := d.pool.Exec(ctx, sw.sql, sw.keep.Microseconds(), retentionBatch, endKinds, codes, ChannelEmail)
					if err != nil {
						if ctx.Err() == nil {
							d.log.Warn("notify: deleting old "+sw.what+" notifications failed", "err", err)
						}
						break
					}
					if tag.RowsAffected() < retentionBatch {
						break
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// listen wakes the dispatcher on every NOTIFY of the schema's channel, on a dedicated
// connection hijacked from the pool, reconnecting with backoff when it is lost. listening
// tells the loop whether it may rely on NOTIFYs; every change of it wakes the loop too.
func (d *Dispatcher) listen(ctx context.Context, wake chan<- struct{}, listening *atomic.Bool) {
	var backoff time.Duration
	for {
		ok, err := d.listenOnce(ctx, wake, listening)
		listening.Store(false)
		signal(wake)
		if ctx.Err() != nil {
			return
		}
		if ok {
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

func (d *Dispatcher) listenOnce(ctx context.Context, wake chan<- struct{}, listening *atomic.Bool) (ok bool, err error) {
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
	listening.Store(true)
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
