// Package notify delivers customer notifications (order confirmed, ready, line unavailable,
// cancelled, expiring soon, ...) through one notification outbox to pluggable senders.
//
// It owns the notifications and notification_channels tables in the fulfilment schema
// (migration 00020 and up in services/fulfilment/migrations). The flow:
//
//  1. Fulfilment calls [Enqueue] inside the transaction that changes the order, so a
//     notification exists if and only if the change committed. Enqueue writes one row per
//     channel that applies and has a sender in this copy ([Message].Channels) or in another
//     live copy (see heartbeatEvery): "webhook" always, "email" when the shopper gave an
//     address and the kind is one worth an email. With no sender configured anywhere it writes
//     nothing, so a deployment without notifications pays nothing for them on each order
//     (see [Writer.WatchServed]).
//     Each row is delivered, retried and dead-lettered on its own, and each channel has send
//     slots of its own (DispatcherConfig.Concurrency), so a failing or hung mail server never
//     holds back the webhook, nor a hung webhook receiver the shopper's email.
//  2. A [Dispatcher] (started from the fulfilment service's Run) claims due rows with FOR UPDATE
//     SKIP LOCKED and hands them to the [Sender] of their channel: [WebhookSender] (signed JSON
//     POST) or [SMTPSender] (plain-text email). Any number of dispatchers, in any number of
//     processes, share the work; claiming moves a row one lease ahead, so two never send the
//     same row at once. A failure is retried with exponential backoff and jitter; a permanent
//     failure, or the last allowed attempt, moves the row to the dead-letter list ("dead").
//     A copy leaves the rows of a channel it has no sender for to the copies that have one, so
//     copies with different senders may run side by side (a rolling deploy); a row whose
//     channel no copy has served for a generous grace is marked "skipped". An email is also
//     skipped when it has gone stale while it waited (a retry, a replay): one carrying the
//     pickup code of an order that has ended, or one older than an email of the same order
//     already sent. Delivered and skipped rows are deleted after DispatcherConfig.Retention,
//     dead letters after DeadRetention.
//     Its cost does not grow with each order: writers wake it with a NOTIFY at most once per
//     notifyGap, a round (one statement) claims every due row it has room for, rounds are at
//     least RoundInterval apart, sends' outcomes are written many per statement, and with
//     nothing pending it sends no statement at all (IdlePollInterval aside).
//  3. Operators read the dead-letter list and replay entries through FulfilmentAdminService,
//     which [Admin] implements.
//
// Delivery is at least once: a dispatcher that dies after sending and before recording it sends
// again after the lease. Every delivery carries the notification id (webhook header
// Handoff-Event-Id, email Message-ID), the same on every attempt and replay, so receivers can
// drop duplicates.
//
// Pickup codes: a webhook never carries the pickup code (like the domain events, it may reach
// systems other than the shopper's own device); the shopper's own email does, for the kinds
// where the order can still be collected, because that is what they show at the counter.
package notify

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// Kinds of notification. A Kind is "order.<event>"; these are the ones Handoff sends today.
const (
	KindConfirmed       = "order.confirmed"
	KindRejected        = "order.rejected"
	KindPreparing       = "order.preparing"
	KindReady           = "order.ready"
	KindLineUnavailable = "order.line_unavailable"
	KindCancelled       = "order.cancelled"
	KindExpiringSoon    = "order.expiring_soon"
	KindExpired         = "order.expired"
	KindCollected       = "order.collected"
)

// Channels a notification can go out on.
const (
	ChannelWebhook = "webhook"
	ChannelEmail   = "email"
)

// emailKinds are the kinds worth an email to the shopper; the rest (preparing, and any kind
// added later) go to the webhook only.
var emailKinds = map[string]bool{
	KindConfirmed: true, KindRejected: true, KindReady: true, KindLineUnavailable: true,
	KindCancelled: true, KindExpiringSoon: true, KindExpired: true, KindCollected: true,
}

// codeKinds are the kinds after which the order can still be collected: their email carries
// the pickup code.
var codeKinds = map[string]bool{
	KindConfirmed: true, KindPreparing: true, KindReady: true, KindLineUnavailable: true, KindExpiringSoon: true,
}

var kindPattern = regexp.MustCompile(`^order\.[a-z][a-z_]{0,62}$`)

// Message is one thing a shopper should hear about an order.
type Message struct {
	// Kind is what happened: "order.confirmed", "order.rejected", "order.preparing",
	// "order.ready", "order.line_unavailable", "order.cancelled", "order.expiring_soon",
	// "order.expired", "order.collected" (the Kind* constants).
	Kind string
	// Order is the order after the change. Its history is not stored; its pickup code is kept
	// only for the shopper's own email (see the package documentation).
	Order *fulfilmentv1.Order
	// Email is the shopper's email address; may be empty (then no email is sent).
	Email string
	// Channels are the channels this copy has senders for (ChannelsOf): rows are written for
	// those, and for the others while another copy serves them. Nil writes every channel, and
	// the dispatcher marks the rows of a channel no copy serves skipped.
	Channels Channels
}

// Channels is a set of channel names ("webhook", "email").
type Channels map[string]bool

// ChannelsOf returns the channels senders deliver (never nil: no senders, no channels).
func ChannelsOf(senders []Sender) Channels {
	c := Channels{}
	for _, s := range senders {
		c[s.Channel()] = true
	}
	return c
}

// enqueueSQL inserts a message's rows, one per channel ($1 ids, $4 channels, $5 recipients).
const enqueueSQL = `INSERT INTO notifications (id, order_id, kind, channel, recipient, order_snapshot, order_version)
	SELECT r.id, $2, $3, r.channel, r.recipient, $6, $7
	FROM unnest($1::uuid[], $4::text[], $5::text[]) AS r(id, channel, recipient)` + enqueueOnConflict

const enqueueOnConflict = `
	ON CONFLICT (id) DO NOTHING`

// enqueueServedSQL is enqueueSQL for a writer that lacks the sender of some of the channels:
// it writes a row of those only while another copy serves the channel (notification_channels,
// stamped within servedGrace, $9 µs); the channels in $8 (configured here) are written always.
// The check rides in the insert itself, so it costs no query of its own (and works in a
// caller's write-only batch).
const enqueueServedSQL = `INSERT INTO notifications (id, order_id, kind, channel, recipient, order_snapshot, order_version)
	SELECT r.id, $2, $3, r.channel, r.recipient, $6, $7
	FROM unnest($1::uuid[], $4::text[], $5::text[]) AS r(id, channel, recipient)
	WHERE r.channel = ANY($8::text[]) OR EXISTS (
		SELECT 1 FROM notification_channels s
		WHERE s.channel = r.channel AND s.served_time > now() - $9::bigint * interval '1 microsecond')` + enqueueOnConflict

// withNotify makes an enqueue statement also wake the schema's dispatchers once the caller
// commits (NOTIFY is transactional).
func withNotify(insert string) string {
	return `WITH ins AS (` + insert + ` RETURNING 1)
SELECT pg_notify(` + channelSQL + `, '') WHERE EXISTS (SELECT 1 FROM ins)`
}

var (
	enqueueNotifySQL       = withNotify(enqueueSQL)
	enqueueServedNotifySQL = withNotify(enqueueServedSQL)
)

// notifyGap spaces the NOTIFYs of one [Writer]'s Enqueue calls. A transaction that NOTIFYs
// takes a lock that is global to the PostgreSQL server and holds it through its commit's disk
// flush (see outbox.NotifyGap), so a NOTIFY with every order transition would make every
// notifying commit on the server wait in one line. A writer that finds the last NOTIFY younger
// than this leaves it out; the dispatchers look again after every NOTIFY they hear (see
// followUp) and find its rows then.
const notifyGap = 15 * time.Millisecond

// Writer enqueues the notifications of one schema (a fulfilment service instance holds one).
// It spaces their NOTIFYs (notifyGap): a NOTIFY wakes only its own schema's dispatchers, so a
// writer that left its NOTIFY out because another schema's writer had just sent one would
// leave its rows waiting for the dispatchers' idle poll (IdlePollInterval). The zero value is
// ready to use; use one per schema.
type Writer struct {
	// lastNotify is when this writer last enqueued with a NOTIFY, in UnixNano.
	lastNotify atomic.Int64
	// served is the channels some copy served at WatchServed's last look; nil until it has
	// looked, or when its last look failed.
	served atomic.Pointer[map[string]bool]
}

// shouldNotify reports whether an Enqueue now should NOTIFY, and claims the slot if so.
func (w *Writer) shouldNotify() bool {
	now := time.Now().UnixNano()
	prev := w.lastNotify.Load()
	return now-prev >= int64(notifyGap) && w.lastNotify.CompareAndSwap(prev, now)
}

// slotFree reports whether an Enqueue now may NOTIFY, without claiming the slot.
func (w *Writer) slotFree() bool {
	return time.Now().UnixNano()-w.lastNotify.Load() >= int64(notifyGap)
}

// channelSQL is the NOTIFY channel of the schema's dispatchers; channel names are limited to
// 63 bytes, so a long schema name is hashed.
const channelSQL = `CASE WHEN octet_length('handoff_notify_' || current_schema()) <= 63
	THEN 'handoff_notify_' || current_schema()
	ELSE 'handoff_notify_' || md5(current_schema()) END`

// Enqueue records m in the notification outbox inside tx, the caller's transition transaction
// (schema fulfilment, search_path set): one row for the webhook and, when m.Email is set and
// the kind is worth an email, one for the email, in one statement, for the channels of
// m.Channels and those another copy serves. Nothing is sent unless tx commits. It wakes the
// dispatchers with a NOTIFY at most once per notifyGap per Writer. It only Execs, so tx may
// be a write-only batch.
//
// Enqueue is idempotent per (order, order version, kind, channel): the notification id is
// derived from them, so writing the same transition's notification twice sends it once.
// An order without a version gets a fresh id every time.
func (w *Writer) Enqueue(ctx context.Context, tx pgx.Tx, m Message) error {
	if !kindPattern.MatchString(m.Kind) {
		return fmt.Errorf("notify: kind %q is not order.<event>", m.Kind)
	}
	if m.Order.GetId() == "" {
		return errors.New("notify: message has no order id")
	}
	// The channels that apply, and of those the ones configured here (all of them when
	// m.Channels is nil).
	var channels, recipients []string
	local := []string{} // not nil: NULL would make ANY($8) NULL
	add := func(channel, recipient string) {
		channels, recipients = append(channels, channel), append(recipients, recipient)
		if m.Channels == nil || m.Channels[channel] {
			local = append(local, channel)
		}
	}
	add(ChannelWebhook, "")
	if m.Email != "" && emailKinds[m.Kind] {
		add(ChannelEmail, m.Email)
	}
	// A channel without a sender here is written only while another copy serves it: left out
	// when none did as this writer last looked (WatchServed), and checked by the statement
	// itself against notification_channels otherwise. Nothing left, nothing is sent.
	served := w.served.Load()
	if served != nil {
		kept := 0
		for i, ch := range channels {
			if slices.Contains(local, ch) || (*served)[ch] {
				channels[kept], recipients[kept] = ch, recipients[i]
				kept++
			}
		}
		channels, recipients = channels[:kept], recipients[:kept]
		if len(channels) == 0 {
			return nil
		}
	}
	checkServed := len(local) < len(channels)

	snap := proto.Clone(m.Order).(*fulfilmentv1.Order)
	snap.History = nil
	// The pickup code is never stored: the dispatcher derives it again when it sends the
	// shopper's own email (DispatcherConfig.PickupCode).
	snap.PickupCode = ""

	payload, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("notify: marshal order %s: %w", snap.GetId(), err)
	}
	ids := make([]string, len(channels))
	for i, ch := range channels {
		ids[i] = notificationID(snap, m.Kind, ch)
	}
	args := []any{ids, snap.GetId(), m.Kind, channels, recipients, payload, snap.GetVersion()}
	sql, notifySQL := enqueueSQL, enqueueNotifySQL
	if checkServed {
		sql, notifySQL = enqueueServedSQL, enqueueServedNotifySQL
		args = append(args, local, servedGrace.Microseconds())
	}
	// A statement that will write a row (a channel served here, or one another copy served at
	// the last look) takes the NOTIFY slot. One that may write none (every channel checked, the
	// writer not having looked yet) NOTIFYs while the slot is free but leaves it to the next
	// writer, whose rows would otherwise wait for the dispatchers' idle poll behind a NOTIFY
	// never sent.
	if expectRows := len(local) > 0 || served != nil; expectRows && w.shouldNotify() || !expectRows && w.slotFree() {
		sql = notifySQL
	}
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("notify: enqueue %s for order %s: %w", m.Kind, snap.GetId(), err)
	}
	return nil
}

// idNamespace scopes the name-based notification ids.
var idNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://handoff.dev/notifications"))

func notificationID(o *fulfilmentv1.Order, kind, channel string) string {
	if o.GetVersion() == 0 {
		return uuid.Must(uuid.NewV7()).String()
	}
	return uuid.NewSHA1(idNamespace, []byte(o.GetId()+"\x00"+strconv.FormatInt(o.GetVersion(), 10)+"\x00"+kind+"\x00"+channel)).String()
}
