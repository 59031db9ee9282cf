// Package notify delivers customer notifications (order confirmed, ready, line unavailable,
// cancelled, expiring soon, ...) through one notification outbox to pluggable senders.
//
// It owns the notifications table in the fulfilment schema (migration 00020 and up in
// services/fulfilment/migrations). The flow:
//
//  1. Fulfilment calls [Enqueue] inside the transaction that changes the order, so a
//     notification exists if and only if the change committed. Enqueue writes one row per
//     channel that may apply: "webhook" always, "email" when the shopper gave an address and the
//     kind is one worth an email (see [Message]). Each row is delivered, retried and
//     dead-lettered on its own, so a failing mail server never holds back the webhook.
//  2. A [Dispatcher] (started from the fulfilment service's Run) claims due rows with FOR UPDATE
//     SKIP LOCKED and hands them to the [Sender] of their channel: [WebhookSender] (signed JSON
//     POST) or [SMTPSender] (plain-text email). Any number of dispatchers, in any number of
//     processes, share the work; claiming moves a row one lease ahead, so two never send the
//     same row at once. A failure is retried with exponential backoff and jitter; a permanent
//     failure, or the last allowed attempt, moves the row to the dead-letter list ("dead").
//     A row whose channel has no sender in this deployment is marked "skipped" (copies of the
//     fulfilment service must therefore share one sender configuration).
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
	"strconv"

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
}

// enqueueSQL inserts one notification row and wakes the dispatchers of this schema once the
// caller commits (NOTIFY is transactional, and identical notifications in one transaction fold
// into one).
const enqueueSQL = `WITH ins AS (
	INSERT INTO notifications (id, order_id, kind, channel, recipient, order_snapshot)
	VALUES ($1, $2, $3, $4, $5, $6)
	ON CONFLICT (id) DO NOTHING
	RETURNING id)
SELECT pg_notify(` + channelSQL + `, '') FROM ins`

// channelSQL is the NOTIFY channel of the schema's dispatchers; channel names are limited to
// 63 bytes, so a long schema name is hashed.
const channelSQL = `CASE WHEN octet_length('handoff_notify_' || current_schema()) <= 63
	THEN 'handoff_notify_' || current_schema()
	ELSE 'handoff_notify_' || md5(current_schema()) END`

// Enqueue records m in the notification outbox inside tx, the caller's transition transaction
// (schema fulfilment, search_path set): one row for the webhook and, when m.Email is set and
// the kind is worth an email, one for the email. Nothing is sent unless tx commits.
//
// Enqueue is idempotent per (order, order version, kind, channel): the notification id is
// derived from them, so writing the same transition's notification twice sends it once.
// An order without a version gets a fresh id every time.
func Enqueue(ctx context.Context, tx pgx.Tx, m Message) error {
	if !kindPattern.MatchString(m.Kind) {
		return fmt.Errorf("notify: kind %q is not order.<event>", m.Kind)
	}
	if m.Order.GetId() == "" {
		return errors.New("notify: message has no order id")
	}
	snap := proto.Clone(m.Order).(*fulfilmentv1.Order)
	snap.History = nil
	// The pickup code is never stored: the dispatcher derives it again when it sends the
	// shopper's own email (DispatcherConfig.PickupCode).
	snap.PickupCode = ""

	rows := []struct{ channel, recipient string }{{ChannelWebhook, ""}}
	if m.Email != "" && emailKinds[m.Kind] {
		rows = append(rows, struct{ channel, recipient string }{ChannelEmail, m.Email})
	}
	for _, r := range rows {
		payload, err := proto.Marshal(snap)
		if err != nil {
			return fmt.Errorf("notify: marshal order %s: %w", snap.GetId(), err)
		}
		id := notificationID(snap, m.Kind, r.channel)
		if _, err := tx.Exec(ctx, enqueueSQL, id, snap.GetId(), m.Kind, r.channel, r.recipient, payload); err != nil {
			return fmt.Errorf("notify: enqueue %s %s for order %s: %w", r.channel, m.Kind, snap.GetId(), err)
		}
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
