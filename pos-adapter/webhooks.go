package posadapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/egress"
	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/pgtext"
	"github.com/handoff-dev/handoff/internal/retryafter"
	"github.com/handoff-dev/handoff/internal/rounds"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/urlsecret"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// Headers of an outbound delivery, besides SignatureHeader. The body is the TicketRaised
// message as protobuf JSON; a receiver drops duplicates by ticket id (a delivery whose
// acknowledgement was lost is sent again) and orders by the ticket's sequence (deliveries are
// made side by side and retried, so they may arrive out of order).
const (
	DeliveryIDHeader = "Handoff-Delivery-Id"
	TicketIDHeader   = "Handoff-Ticket-Id"
)

// webhookWorkers is how many deliveries one adapter makes at once.
const webhookWorkers = 16

// Shares of the send slots (claimDeliveriesSQL). A store has at most webhookStoreSends
// deliveries under way at once (per adapter copy), so that a slow vendor's backlog does not
// hold every slot; probes of stores in backoff, which may each hold a slot for the whole
// timeout, hold at most webhookProbeSlots, so that many stores of one vendor down at once leave
// slots for the others. A round's walk visits at most webhookWalkStores stores.
const (
	webhookStoreSends = 4
	webhookProbeSlots = webhookWorkers / 2
	webhookWalkStores = 256
)

// webhookFruitlessWalkGap is the pause after a round whose walk visited webhookWalkStores
// stores and found nothing due: with more stores than that waiting out a backoff, rounds
// walked them on without a pause, a statement every webhookRoundGap. A due delivery of a
// store further on waits at most this much per webhookWalkStores stores in backoff before it.
const webhookFruitlessWalkGap = 250 * time.Millisecond

// wakeWebhooksAt wakes the dispatcher with store's deliveries just queued: its walk starts at
// the store (one of them, when several had some), so that they need not wait for a lap of
// hundreds of stores in backoff.
func (a *Adapter) wakeWebhooksAt(store string) {
	a.webhookHint.Store(&store)
	a.wakeWebhooks()
}

func (a *Adapter) wakeWebhooks() {
	select {
	case a.webhookWake <- struct{}{}:
	default:
	}
}

func (api adminAPI) SetStoreWebhook(ctx context.Context, req *connect.Request[posv1.SetStoreWebhookRequest]) (*connect.Response[posv1.SetStoreWebhookResponse], error) {
	a := api.a
	w := req.Msg.GetWebhook()
	var v rpcerr.Violations
	if w == nil {
		v.Add("webhook", "required")
	}
	if err := checkStoreID(w.GetStoreId()); err != nil {
		v.Add("webhook.store_id", err.Error())
	}
	if err := checkWebhookURL(w.GetUrl(), a.webhookNets); err != nil {
		v.Add("webhook.url", err.Error())
	}
	kinds := []string{}
	for i, k := range w.GetKinds() {
		if _, ok := posv1.TicketKind_name[int32(k)]; !ok || k == posv1.TicketKind_TICKET_KIND_UNSPECIFIED {
			v.Addf(fmt.Sprintf("webhook.kinds[%d]", i), "not a ticket kind: %v", k)
		} else if !slices.Contains(kinds, KindToken(k)) {
			kinds = append(kinds, KindToken(k))
		}
	}
	var grace time.Duration
	if t := req.Msg.GetPreviousSecretTtl(); t != nil {
		grace = t.AsDuration()
		switch {
		case !t.IsValid() || grace < 0:
			v.Add("previous_secret_ttl", "not a valid duration of 0 or more")
		case grace > maxSecretGrace:
			v.Addf("previous_secret_ttl", "at most %s", maxSecretGrace)
		case grace > 0 && !req.Msg.GetRotateSecret():
			v.Add("previous_secret_ttl", "only with rotate_secret")
		}
	}
	if err := v.Err(); err != nil {
		return nil, a.fail(ctx, "", err)
	}
	if err := a.storesAtInventory(ctx, []string{w.GetStoreId()}, func(int) string { return "webhook.store_id" }); err != nil {
		return nil, a.fail(ctx, "", err)
	}

	tx, err := a.db.Begin(ctx)
	if err != nil {
		return nil, a.internal(ctx, "set webhook", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The row is made first, then locked: a SELECT … FOR UPDATE locks nothing that is not there,
	// and two first calls at once would each hand out a secret of their own, only one of them
	// stored. Made here, the other call waits for this one and finds its secret.
	newSecret, err := newSigningSecret()
	if err != nil {
		return nil, a.internal(ctx, "set webhook", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO store_webhooks (store_id, url, kinds, enabled, signing_secret) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (store_id) DO NOTHING`, w.GetStoreId(), w.GetUrl(), kinds, w.GetEnabled(), newSecret)
	if err != nil {
		return nil, a.internal(ctx, "set webhook", fmt.Errorf("create the row: %w", err))
	}
	created := tag.RowsAffected() == 1
	var secret string
	var retry *time.Time
	if err := tx.QueryRow(ctx, `SELECT signing_secret, retry_time FROM store_webhooks WHERE store_id = $1 FOR UPDATE`,
		w.GetStoreId()).Scan(&secret, &retry); err != nil {
		return nil, a.internal(ctx, "set webhook", fmt.Errorf("lock the row: %w", err))
	}
	// previous and its expiry: kept as they are ($6 NULL) unless the secret is replaced, when the
	// one replaced stays valid for the grace asked (none: it and any earlier grace end now).
	var previous *string
	var graceUS *int64
	switch {
	case created || secret == "" || req.Msg.GetRotateSecret():
		old := secret
		secret = newSecret
		us := grace.Microseconds()
		graceUS = &us
		if !created && old != "" && grace > 0 {
			previous = &old
		}
	default:
		newSecret = "" // the store keeps the secret it has: not shown again
	}
	var updated time.Time
	var previousExpire *time.Time
	if err := tx.QueryRow(ctx, `
		INSERT INTO store_webhooks (store_id, url, kinds, enabled, signing_secret, update_time) VALUES ($1, $2, $3, $4, $5, now())
		ON CONFLICT (store_id) DO UPDATE SET url = excluded.url, kinds = excluded.kinds, enabled = excluded.enabled,
			signing_secret = excluded.signing_secret, update_time = now(), retry_time = NULL, failures = 0,
			previous_secret = CASE WHEN $6::bigint IS NULL THEN store_webhooks.previous_secret ELSE $7 END,
			previous_secret_expire_time = CASE WHEN $6::bigint IS NULL THEN store_webhooks.previous_secret_expire_time
				WHEN $7::text IS NULL THEN NULL ELSE now() + $6::bigint * interval '1 microsecond' END
		RETURNING update_time, CASE WHEN previous_secret_expire_time > now() THEN previous_secret_expire_time END`,
		w.GetStoreId(), w.GetUrl(), kinds, w.GetEnabled(), secret, graceUS, previous).Scan(&updated, &previousExpire); err != nil {
		return nil, a.internal(ctx, "set webhook", err)
	}
	// A webhook set anew ends its store's backoff: a new URL is tried at once, and a webhook
	// turned off or narrowed drops the deliveries waiting at once, not one per backoff.
	if retry != nil {
		if _, err := tx.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_time = now()
			WHERE store_id = $1 AND state = 'pending' AND next_attempt_time = $2`, w.GetStoreId(), *retry); err != nil {
			return nil, a.internal(ctx, "set webhook", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, a.internal(ctx, "set webhook", err)
	}
	if retry != nil {
		a.wakeWebhooks()
	}
	origin := "" // the URL's path and query string may hold the vendor's token: not for logs
	if u, err := url.Parse(w.GetUrl()); err == nil {
		origin = urlsecret.Origin(u)
	}
	a.log.InfoContext(ctx, "store webhook set", "store_id", w.GetStoreId(), "origin", origin, "enabled", w.GetEnabled(),
		"new_secret", newSecret != "", "previous_secret_until", previousExpire, "by", adminName(ctx))
	out := proto.Clone(w).(*posv1.StoreWebhook)
	out.UpdateTime = timestamppb.New(updated)
	res := &posv1.SetStoreWebhookResponse{Webhook: out, SigningSecret: newSecret}
	if previousExpire != nil {
		res.PreviousSecretExpireTime = timestamppb.New(*previousExpire)
	}
	return connect.NewResponse(res), nil
}

// maxSecretGrace bounds previous_secret_ttl: a rotation is finished within days, and a
// secret replaced must not stay valid for good by mistake.
const maxSecretGrace = 7 * 24 * time.Hour

// checkWebhookURL accepts https URLs, and http ones on a loopback host (development), whose
// host is not an address nets refuses.
func checkWebhookURL(raw string, nets *egress.Guard) error {
	if raw == "" {
		return errors.New("required")
	}
	if len(raw) > maxWebhookURLLength {
		return fmt.Errorf("at most %d characters", maxWebhookURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || u.User != nil {
		return errors.New("not an absolute URL without credentials")
	}
	// url.Parse takes any digits as a port; one no connection can use would make every
	// delivery fail and the store's tickets dead letters.
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %s is not 1-65535", p)
		}
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return errors.New("must be https (http only for a loopback host, in development)")
		}
	default:
		return errors.New("must be https")
	}
	return nets.CheckHost(u.Hostname())
}

// webhookRoundGap is the least time between two claiming rounds: the wake-ups that come
// meanwhile (one per committed batch of tickets with deliveries) are served by one round. It
// adds at most this much to a delivery's wait.
const webhookRoundGap = 10 * time.Millisecond

// runWebhookDispatcher delivers due webhook deliveries until ctx ends. Several adapters may
// dispatch at once: a delivery is claimed (its next attempt moved past the send's timeout)
// before it is sent, so one copy sends it; a copy that dies mid-send leaves it to be sent
// again once the claim lapses.
//
// A round is one statement: it claims what is due (with the ticket and the store's webhook)
// and learns when the next pending delivery falls due. Rounds happen when this process queued
// deliveries or replayed one, when a delivery falls due, when a send frees a slot while due
// ones wait, and every WebhookPollInterval while deliveries are pending (another copy's
// retries); never more often than webhookRoundGap. With nothing pending the dispatcher sends
// nothing for WebhookIdlePollInterval, the safety net for deliveries a copy queued and then
// went away without sending; so a deployment without webhooks costs nothing per ticket.
func (a *Adapter) runWebhookDispatcher(ctx context.Context) {
	rec := newDeliveryRecorder(a)
	var bg, sends sync.WaitGroup
	bg.Go(rec.run)
	defer func() {
		sends.Wait()
		rec.close() // after the last send: it records what they handed over, then ends
		bg.Wait()
	}()

	slots := make(chan struct{}, webhookWorkers)
	freed := make(chan struct{}, 1)
	var inFlight sendsInFlight
	cursor := ""    // where the next round's walk of the stores starts (after it)
	hinted := false // the last round walked from a store just freed or queued to, not the cursor
	s := rounds.Schedule{Gap: webhookRoundGap, Kick: time.Now()}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		free := cap(slots) - len(slots)
		at, wanted := s.Next()
		if wanted && !at.After(now) {
			if free == 0 {
				s.More = true // a finished send frees a slot and wakes us
			} else {
				stores, sendsOf, probes := inFlight.load()
				// A store whose send just ended, or that just had deliveries queued here, is
				// walked from first: it may have more to send, and the cursor has moved on, maybe
				// past hundreds of stores in backoff. Such a walk leaves the cursor where it was,
				// and every other round walks from the cursor, so that the rounds still go round
				// every store however busy a few are.
				from, fromCursor := cursor, false
				if !hinted {
					// Deliveries just queued first: sends end all the time while any store is busy.
					if st := a.webhookHint.Swap(nil); st != nil {
						from, fromCursor = *st, true
					} else if st := inFlight.takeFreed(); st != "" {
						from, fromCursor = st, true
					}
				}
				hinted = fromCursor
				claims, next, after, err := a.claimDeliveries(ctx, free, max(min(free, webhookProbeSlots-probes), 0), stores, sendsOf, from, fromCursor)
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					a.log.Warn("claim webhook deliveries failed; retrying", "err", err, "retry_in", s.Failed(time.Now()))
					continue
				}
				if !fromCursor {
					cursor = after
				}
				// A store or the probes at their share, as the claim saw it, leave due deliveries the
				// next due time does not count: a send ending (even one that ended during the claim)
				// starts a round, as when every slot is taken.
				capped := atShare(stores, sendsOf, probes, claims)
				for _, c := range claims {
					inFlight.add(c.storeID, c.probe)
				}
				nextDue, poll := time.Duration(0), a.cfg.WebhookPollInterval
				if next != nil {
					nextDue = *next
				} else if !capped {
					poll = a.cfg.WebhookIdlePollInterval
				}
				s.Done(now, time.Now(), next != nil, nextDue, len(claims) == free || capped)
				s.Poll = now.Add(poll)
				for _, c := range claims {
					slots <- struct{}{}
					sends.Go(func() {
						defer func() { inFlight.remove(c.storeID, c.probe); <-slots; signal(freed) }()
						if o, ok := a.deliver(ctx, c); ok {
							rec.add(o)
						}
					})
				}
				continue
			}
		}

		var fire <-chan time.Time
		if wanted && free > 0 {
			timer.Reset(at.Sub(now))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-a.webhookWake:
			s.Kick = time.Now()
		case <-freed:
			s.FreedSlot(time.Now())
		case <-rec.retries.C():
			s.RetryAt(rec.retries.Take())
		case <-fire:
		}
		timer.Stop()
	}
}

// sendsInFlight counts the dispatcher's sends under way, per store and probes, for the shares
// of the slots (webhookStoreSends, webhookProbeSlots).
type sendsInFlight struct {
	mu       sync.Mutex
	perStore map[string]int32
	probes   int
	// freed is the last store whose send ended.
	freed string
}

func (f *sendsInFlight) add(store string, probe bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perStore == nil {
		f.perStore = map[string]int32{}
	}
	f.perStore[store]++
	if probe {
		f.probes++
	}
}

func (f *sendsInFlight) remove(store string, probe bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.freed = store
	if f.perStore[store]--; f.perStore[store] <= 0 {
		delete(f.perStore, store)
	}
	if probe {
		f.probes--
	}
}

// takeFreed returns, once, the last store whose send ended.
func (f *sendsInFlight) takeFreed() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.freed
	f.freed = ""
	return st
}

// load is the stores with sends under way, how many each, and the probes under way.
func (f *sendsInFlight) load() (stores []string, sends []int32, probes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, n := range f.perStore {
		stores, sends = append(stores, s), append(sends, n)
	}
	return stores, sends, f.probes
}

// atShare reports whether, with claims added to the sends under way (stores, sends, probes)
// that the claim was given, a store or the probes are at their share of the slots.
func atShare(stores []string, sends []int32, probes int, claims []deliveryClaim) bool {
	per := make(map[string]int32, len(stores))
	for i, s := range stores {
		per[s] = sends[i]
	}
	for _, c := range claims {
		per[c.storeID]++
		if c.probe {
			probes++
		}
	}
	if probes >= webhookProbeSlots {
		return true
	}
	for _, n := range per {
		if n >= webhookStoreSends {
			return true
		}
	}
	return false
}

// signal wakes a loop without blocking; one pending wake is enough.
func signal(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// deliveryClaim is a delivery this adapter holds the claim of, with what sending it takes.
type deliveryClaim struct {
	id, storeID, ticketID string
	attempts              int
	found                 bool // the ticket is still there
	target, secret        string
	previousSecret        string // the secret replaced, while its grace runs: deliveries are signed with both
	enabled               bool
	kinds                 []string
	payload               []byte
	seq                   int64
	kind                  string
	// giveUpAt is when a failed attempt makes it a dead letter: WebhookGiveUpAfter past its
	// queueing, by this process's clock (the age is the database's, so clocks need not agree).
	giveUpAt time.Time
	// probe: the store was in backoff, and this one attempt tries its endpoint again.
	probe bool
}

// claimDeliveriesSQL claims up to $1 due deliveries for $2 microseconds, returning each with
// its ticket, its store's webhook, its age in microseconds (since create_time: when it was
// queued, or replayed) and whether it is a probe, and, in a last row (id NULL), how long until
// the earliest other pending delivery falls due and the store the next round's walk starts
// after. The subqueries see the rows as they were before the statement, so the ones claimed or
// parked here are left out by id. A delivery of a store still waiting out its backoff falls
// due no sooner than the wait is over, whatever its own next_attempt_time: one can be due
// already (a ticket raised as the backoff began, its raise not seeing the new retry_time nor
// the backoff seeing its delivery), and counted as due it made the dispatcher claim, and find
// nothing, every webhookRoundGap until then.
//
// A store whose endpoint failed is in backoff (store_webhooks.retry_time set by
// writeWithBackoff; see backOffStoresSQL): its deliveries are not claimed with the others.
// Once its wait is over, one of its due deliveries (the earliest, the oldest ticket first) is
// claimed as a probe, and the store's wait and its other pending deliveries are put off for
// the claim's lease, so that one attempt, not one per delivery, tries an endpoint that may not
// answer; the probe's outcome ends the backoff or starts the next wait (deliveryRecorder). The
// store's row is locked (SKIP LOCKED) so that two copies do not probe it at once. At most $3
// probes are claimed (the dispatcher keeps part of its slots from probes, which may each hold
// one for the whole timeout: many stores of one vendor down at once must not starve the rest).
//
// The others are claimed store by store, not oldest first, so that one store's backlog (a slow
// vendor's, answering) does not hold every slot: a walk visits the stores with pending
// deliveries in store order, from the one after $7 round to it, at most $8 of them (a step is
// an index probe of webhook_deliveries_pending_by_store: the round's cost is bounded by $8, not
// by how many deliveries wait), and takes from each its earliest due ones, up to $4 less what
// the dispatcher has in flight for it ($5, $6). Across stores, the ones with the fewest sends
// under way go first. Stores left full count in the next due time no more (a send of theirs
// ending starts a round: runWebhookDispatcher), nor, when the probes were capped, stores in
// backoff; a walk cut short leaves the next round due at once, or, when it found nothing due
// (its stores all waiting out a backoff: one vendor down for hundreds of stores), after $9
// microseconds (webhookFruitlessWalkGap), rather than walking on without a pause. With $10 the
// walk starts at store $7 itself: a store whose send just ended or that just had deliveries
// queued, so that its next ones go at once, not after a lap of the stores in backoff.
const claimDeliveriesSQL = `
WITH RECURSIVE walk(store_id, first, n) AS (
	SELECT s.store_id, s.store_id, 1 FROM (SELECT coalesce(
		CASE WHEN $10::boolean AND EXISTS (SELECT 1 FROM webhook_deliveries WHERE state = 'pending' AND store_id = $7) THEN $7 END,
		(SELECT min(store_id) FROM webhook_deliveries WHERE state = 'pending' AND store_id > $7),
		(SELECT min(store_id) FROM webhook_deliveries WHERE state = 'pending')) AS store_id) s
	WHERE s.store_id IS NOT NULL
	UNION ALL
	SELECT s.store_id, w.first, w.n + 1 FROM walk w CROSS JOIN LATERAL (SELECT coalesce(
		(SELECT min(d.store_id) FROM webhook_deliveries d WHERE d.state = 'pending' AND d.store_id > w.store_id),
		(SELECT min(d.store_id) FROM webhook_deliveries d WHERE d.state = 'pending')) AS store_id) s
	WHERE w.n < $8 AND s.store_id <> w.first),
gates AS MATERIALIZED (
	SELECT w.store_id FROM store_webhooks w
	WHERE w.retry_time <= now() AND EXISTS (SELECT 1 FROM webhook_deliveries p
		WHERE p.store_id = w.store_id AND p.state = 'pending' AND p.next_attempt_time <= now())
	ORDER BY w.retry_time LIMIT $3
	FOR UPDATE OF w SKIP LOCKED),
probes AS MATERIALIZED (
	SELECT p.id, g.store_id FROM gates g CROSS JOIN LATERAL (
		SELECT d.id FROM webhook_deliveries d
		WHERE d.store_id = g.store_id AND d.state = 'pending' AND d.next_attempt_time <= now()
		ORDER BY d.next_attempt_time, d.create_time LIMIT 1
		FOR UPDATE SKIP LOCKED) p),
load AS MATERIALIZED (SELECT * FROM unnest($5::text[], $6::int[]) AS l(store_id, sends)),
walked AS MATERIALIZED (
	SELECT w.store_id, w.n, coalesce(l.sends, 0) AS sends, sw.retry_time, sw.store_id IS NOT NULL AND sw.retry_time IS NOT NULL AS backoff
	FROM walk w LEFT JOIN load l ON l.store_id = w.store_id LEFT JOIN store_webhooks sw ON sw.store_id = w.store_id),
cand AS MATERIALIZED (
	SELECT c.id, w.store_id, w.n, w.sends, c.next_attempt_time FROM walked w CROSS JOIN LATERAL (
		SELECT d.id, d.next_attempt_time FROM webhook_deliveries d
		WHERE d.store_id = w.store_id AND d.state = 'pending' AND d.next_attempt_time <= now()
		ORDER BY d.next_attempt_time LIMIT greatest($4 - w.sends, 0)
		FOR UPDATE SKIP LOCKED) c
	WHERE NOT w.backoff),
others AS MATERIALIZED (
	SELECT r.id, r.store_id FROM (SELECT c.*, row_number() OVER (PARTITION BY c.store_id ORDER BY c.next_attempt_time) AS rn FROM cand c) r
	ORDER BY r.sends + r.rn, r.n, r.next_attempt_time
	LIMIT $1 - (SELECT count(*) FROM probes)),
full_stores AS (
	SELECT store_id FROM (SELECT store_id, sends FROM load UNION ALL SELECT store_id, 1 FROM others) x
	GROUP BY store_id HAVING sum(sends) >= $4),
due AS (SELECT id FROM probes UNION ALL SELECT id FROM others),
gated AS (
	UPDATE store_webhooks w SET retry_time = now() + $2::bigint * interval '1 microsecond'
	FROM probes p WHERE w.store_id = p.store_id),
parked AS (
	UPDATE webhook_deliveries d SET next_attempt_time = now() + $2::bigint * interval '1 microsecond'
	FROM (SELECT o.id FROM webhook_deliveries o JOIN probes p ON o.store_id = p.store_id
		WHERE o.state = 'pending' AND o.next_attempt_time < now() + $2::bigint * interval '1 microsecond' AND o.id <> p.id
		FOR UPDATE OF o SKIP LOCKED) x
	WHERE d.id = x.id
	RETURNING d.id),
claimed AS (
	UPDATE webhook_deliveries d SET next_attempt_time = now() + $2::bigint * interval '1 microsecond'
	FROM due WHERE d.id = due.id
	RETURNING d.id, d.store_id, d.ticket_id, d.attempts, (extract(epoch FROM now() - d.create_time) * 1e6)::bigint AS age_us)
SELECT c.id::text, c.store_id, c.ticket_id::text, c.attempts, t.ticket_id IS NOT NULL,
	coalesce(w.url, ''), coalesce(w.signing_secret, ''), coalesce(w.enabled, false), coalesce(w.kinds, '{}'),
	t.payload, t.seq, t.kind, c.age_us, c.id IN (SELECT id FROM probes), NULL::bigint, NULL::text,
	CASE WHEN w.previous_secret_expire_time > now() THEN w.previous_secret END
FROM claimed c
LEFT JOIN tickets t ON t.ticket_id = c.ticket_id AND t.store_id = c.store_id
LEFT JOIN store_webhooks w ON w.store_id = c.store_id
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	(extract(epoch FROM least(
		CASE WHEN (SELECT count(*) FROM walk) >= $8 THEN
			now() + CASE WHEN EXISTS (SELECT 1 FROM due) THEN 0 ELSE $9::bigint END * interval '1 microsecond' END,
		(SELECT min(x.next_attempt_time) FROM walked w CROSS JOIN LATERAL (
			SELECT d.next_attempt_time FROM webhook_deliveries d
			WHERE d.store_id = w.store_id AND d.state = 'pending' AND d.id NOT IN (SELECT id FROM due) AND d.id NOT IN (SELECT id FROM parked)
			ORDER BY d.next_attempt_time LIMIT 1) x
		 WHERE w.store_id NOT IN (SELECT store_id FROM full_stores)
			AND (NOT w.backoff OR w.retry_time <= now() AND (SELECT count(*) FROM probes) < $3)),
		(SELECT min(greatest(w.retry_time, p.next_attempt_time)) FROM store_webhooks w CROSS JOIN LATERAL (
			SELECT p.next_attempt_time FROM webhook_deliveries p WHERE p.store_id = w.store_id AND p.state = 'pending'
			ORDER BY p.next_attempt_time LIMIT 1) p
		 WHERE w.retry_time > now()),
		CASE WHEN EXISTS (SELECT 1 FROM parked) THEN now() + $2::bigint * interval '1 microsecond' END) - now()) * 1e6)::bigint,
	coalesce((SELECT w.store_id FROM walk w WHERE w.store_id IN (SELECT store_id FROM others) ORDER BY w.n DESC LIMIT 1),
		(SELECT w.store_id FROM walk w ORDER BY w.n DESC LIMIT 1), $7), NULL`

// webhookLease is how long a claim keeps a delivery from other copies: past the send's
// timeout, so only a copy that died mid-send lets another send it again.
func (a *Adapter) webhookLease() time.Duration { return a.cfg.WebhookTimeout + 30*time.Second }

// claimDeliveries claims up to limit due deliveries, at most probes of them probes, given the
// sends under way per store, walking the stores from after cursor, or from cursor itself with
// fromCursor (see claimDeliveriesSQL). It returns where the walk ended.
func (a *Adapter) claimDeliveries(ctx context.Context, limit, probes int, stores []string, sends []int32, cursor string, fromCursor bool) (claims []deliveryClaim, next *time.Duration, after string, err error) {
	start := time.Now() // before the database read the ages: a give-up falls no later than due
	webhookRounds.Inc()
	rows, err := a.db.Query(ctx, claimDeliveriesSQL, limit, a.webhookLease().Microseconds(), probes, webhookStoreSends,
		stores, sends, cursor, webhookWalkStores, webhookFruitlessWalkGap.Microseconds(), fromCursor)
	if err != nil {
		return nil, nil, cursor, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, storeID, ticketID, target, secret, kind *string
			attempts                                    *int32
			found, enabled                              *bool
			kinds                                       []string
			payload                                     []byte
			seq, ageUS, nextUS                          *int64
			probe                                       *bool
			walkEnd, previous                           *string
		)
		if err := rows.Scan(&id, &storeID, &ticketID, &attempts, &found, &target, &secret, &enabled, &kinds, &payload, &seq, &kind, &ageUS, &probe, &nextUS, &walkEnd, &previous); err != nil {
			return nil, nil, cursor, fmt.Errorf("claim webhook deliveries: %w", err)
		}
		if id == nil {
			if nextUS != nil {
				d := time.Duration(*nextUS) * time.Microsecond
				next = &d
			}
			if walkEnd != nil {
				after = *walkEnd
			}
			continue
		}
		c := deliveryClaim{id: *id, storeID: *storeID, ticketID: *ticketID, attempts: int(*attempts), found: *found,
			target: *target, secret: *secret, enabled: *enabled, kinds: kinds, payload: payload, probe: *probe,
			giveUpAt: start.Add(a.cfg.WebhookGiveUpAfter - time.Duration(*ageUS)*time.Microsecond)}
		if c.found {
			c.seq, c.kind = *seq, *kind
		}
		if previous != nil {
			c.previousSecret = *previous
		}
		claims = append(claims, c)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, cursor, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	return claims, next, after, nil
}

// deliver makes one attempt of a claimed delivery and returns the outcome to record; none when
// shutting down (the claim lapses and another attempt is made).
func (a *Adapter) deliver(ctx context.Context, c deliveryClaim) (deliveryOutcome, bool) {
	log := a.log.With("delivery", c.id, "store_id", c.storeID, "ticket", c.ticketID)
	done := func(state, lastErr string) (deliveryOutcome, bool) {
		attempts := c.attempts
		if state != "dropped" {
			attempts++
		}
		if state != "failed" { // a dead letter is counted once its recording commits
			webhookDeliveries.WithLabelValues(state).Inc()
		}
		return deliveryOutcome{id: c.id, storeID: c.storeID, probe: c.probe, state: state, attempts: attempts, lastError: pgtext.Clip(lastErr, 500)}, true
	}
	if !c.found || !c.enabled || (len(c.kinds) > 0 && !slices.Contains(c.kinds, c.kind)) {
		// The webhook was turned off or narrowed (or the ticket is past retention).
		return done("dropped", "webhook disabled or ticket gone")
	}
	var t posv1.Ticket
	if err := proto.Unmarshal(c.payload, &t); err != nil {
		return done("failed", "stored ticket does not decode: "+err.Error())
	}
	t.Sequence = uint64(c.seq)
	log = log.With("order_id", t.GetOrderId()) // what the on-call looks the store's orders up by
	body, err := protojson.Marshal(&posv1.TicketRaised{Ticket: &t})
	if err != nil {
		return done("failed", "encode ticket: "+err.Error())
	}
	sendErr := a.send(ctx, c.target, c.secret, c, body)
	if sendErr == nil {
		return done("delivered", "")
	}
	if ctx.Err() != nil {
		return deliveryOutcome{}, false
	}
	// Retried for as long as the ticket is of use, not for a number of attempts: a vendor POS
	// offline for longer than a short run of retries (a router reboot) must get its tickets when
	// it answers again, and nothing but an operator retries a dead letter.
	//
	// A vendor that asks for a wait (429, or 503 with Retry-After: a throttle) gets it: its store
	// waits at least that long (writeWithBackoff), never less than the usual step. The time spent
	// waiting counts toward the give-up, which is how long a ticket is worth sending whatever the
	// vendor's pace (and keeps a vendor throttling for ever from holding deliveries for ever).
	// But a throttle does not bring a dead letter forward: its wait is not cut short at the
	// give-up time, since an attempt inside the window the vendor just refused would surely be
	// refused again (and, past the give-up time, make a dead letter); the attempt that decides
	// comes after the vendor's wait, and is taken if the vendor takes it then.
	attempts := c.attempts + 1
	var busy *vendorBusyError
	throttled := errors.As(sendErr, &busy)
	left := time.Until(c.giveUpAt)
	if left <= 0 {
		log.Warn("webhook delivery failed for the last time; kept as a dead letter", "attempts", attempts,
			"give_up_after", a.cfg.WebhookGiveUpAfter, "err", sendErr)
		o, ok := done("failed", sendErr.Error())
		o.unanswered = true
		return o, ok
	}
	wait := min(a.webhookBackoff(attempts), left) // the last attempt is made when the time is up
	o := deliveryOutcome{id: c.id, storeID: c.storeID, probe: c.probe, state: deliveryPending, attempts: attempts,
		lastError: pgtext.Clip(sendErr.Error(), 500), unanswered: true}
	if throttled {
		o.retryAfter = busy.retryAfter
		wait = max(wait, busy.retryAfter)
	}
	o.wait = wait
	webhookDeliveries.WithLabelValues("retry").Inc()
	log.Info("webhook delivery failed; will retry", "attempts", attempts, "retry_in", wait, "throttled", throttled, "err", sendErr)
	return o, true
}

// webhookMaxRetryAfter caps the wait a vendor's Retry-After asks for: a vendor's mistake (a
// wait of days) must not hold a store's tickets past what an operator would look into.
const webhookMaxRetryAfter = time.Hour

// vendorBusyError is a vendor's answer asking for a wait: 429 Too Many Requests, with or
// without Retry-After, or 503 Service Unavailable with one. retryAfter is the wait asked for
// (capped at webhookMaxRetryAfter; 0 when none or one already over).
type vendorBusyError struct {
	err        error
	retryAfter time.Duration
}

func (e *vendorBusyError) Error() string { return e.err.Error() }
func (e *vendorBusyError) Unwrap() error { return e.err }

// webhookBackoff is the wait after the n-th failed attempt: WebhookBackoff doubled per
// attempt, capped, with ±20% jitter so that a receiver coming back is not hit by every retry
// at once.
func (a *Adapter) webhookBackoff(n int) time.Duration {
	d := a.cfg.WebhookBackoff
	for i := 1; i < n && d < a.cfg.WebhookMaxBackoff; i++ {
		d *= 2
	}
	d = min(d, a.cfg.WebhookMaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (a *Adapter) send(ctx context.Context, target, secret string, c deliveryClaim, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Handoff-Webhooks/1")
	secrets := []string{secret}
	if c.previousSecret != "" {
		secrets = append(secrets, c.previousSecret) // a rotation's grace: the vendor may still check with it
	}
	req.Header.Set(SignatureHeader, SignWith(secrets, time.Now(), body))
	req.Header.Set(DeliveryIDHeader, c.id)
	req.Header.Set(TicketIDHeader, c.ticketID)
	res, err := a.cfg.WebhookClient.Do(req)
	// A store's webhook URL may carry secrets (a token in its path or query string, as many
	// vendors' do), and a delivery's error is logged, kept as its last_error and listed to
	// operators: it names the vendor by its origin and leaves the URL's parts out.
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // the url.Error's text is the whole URL
		}
		return fmt.Errorf("POST %s: %s", urlsecret.Origin(req.URL), urlsecret.Redacted(err.Error(), urlsecret.Parts(target, req.URL)))
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		err := fmt.Errorf("HTTP %d from %s: %s", res.StatusCode, urlsecret.Origin(req.URL), urlsecret.Snippet(res.Body, 200, urlsecret.Parts(target, req.URL)))
		wait, asked := retryafter.Parse(res.Header, time.Now(), webhookMaxRetryAfter)
		if res.StatusCode == http.StatusTooManyRequests || (res.StatusCode == http.StatusServiceUnavailable && asked) {
			return &vendorBusyError{err: err, retryAfter: wait}
		}
		return err
	}
	return nil
}

type failedPosition struct {
	Time time.Time `json:"t"`
	ID   string    `json:"id"`
}

// Check implements pagetoken.Checker: the query reads ID as a uuid, in the canonical form
// the list wrote (uuid.Parse also takes urn:uuid:…, which Postgres refuses).
func (p *failedPosition) Check() error {
	id, err := uuid.Parse(p.ID)
	if err == nil && id.String() != p.ID {
		err = fmt.Errorf("id %q is not in canonical form", p.ID)
	}
	return err
}

func (api adminAPI) ListFailedDeliveries(ctx context.Context, req *connect.Request[posv1.ListFailedDeliveriesRequest]) (*connect.Response[posv1.ListFailedDeliveriesResponse], error) {
	a := api.a
	m := req.Msg
	if m.GetStoreId() != "" {
		if err := checkStoreID(m.GetStoreId()); err != nil {
			return nil, a.fail(ctx, "", rpcerr.Invalid("store_id", err.Error()))
		}
	}
	size, err := pagetoken.PageSize(m.GetPageSize(), 50, 200)
	if err != nil {
		return nil, a.fail(ctx, "", err)
	}
	pos := failedPosition{Time: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), ID: "ffffffff-ffff-ffff-ffff-ffffffffffff"}
	if _, err := pagetoken.Decode(m, &pos); err != nil {
		return nil, a.fail(ctx, "", err)
	}
	rows, err := a.db.Query(ctx, `
		SELECT id::text, store_id, ticket_id::text, attempts, last_error, done_time FROM webhook_deliveries
		WHERE state = 'failed' AND ($1 = '' OR store_id = $1) AND (done_time, id) < ($2, $3::uuid)
		ORDER BY done_time DESC, id DESC LIMIT $4`, m.GetStoreId(), pos.Time, pos.ID, size+1)
	if err != nil {
		return nil, a.internal(ctx, "list failed deliveries", err)
	}
	type failed struct {
		d    *posv1.FailedDelivery
		done time.Time
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (failed, error) {
		var f failed
		f.d = &posv1.FailedDelivery{}
		if err := r.Scan(&f.d.Id, &f.d.StoreId, &f.d.TicketId, &f.d.Attempts, &f.d.LastError, &f.done); err != nil {
			return f, err
		}
		f.d.FailTime = timestamppb.New(f.done)
		return f, nil
	})
	if err != nil {
		return nil, a.internal(ctx, "list failed deliveries", err)
	}
	out := &posv1.ListFailedDeliveriesResponse{}
	if len(list) > size {
		list = list[:size]
		last := list[size-1]
		out.NextPageToken = pagetoken.Encode(m, failedPosition{Time: last.done, ID: last.d.GetId()})
	}
	for _, f := range list {
		out.Deliveries = append(out.Deliveries, f.d)
	}
	return connect.NewResponse(out), nil
}

// ReplayDelivery puts a dead letter back in the queue with a fresh retry budget: its
// create_time, from which its give-up time counts, becomes the replay's. It is due at once, or,
// should its store be in backoff, when the backoff lets one try.
func (api adminAPI) ReplayDelivery(ctx context.Context, req *connect.Request[posv1.ReplayDeliveryRequest]) (*connect.Response[posv1.ReplayDeliveryResponse], error) {
	a := api.a
	parsed, err := uuid.Parse(req.Msg.GetDeliveryId())
	if err != nil {
		return nil, a.fail(ctx, "", rpcerr.Invalid("delivery_id", "not a delivery id"))
	}
	id := parsed.String() // canonical: uuid.Parse also takes urn:uuid:…, which Postgres refuses
	// A dead letter is put back only if the dispatcher would send it: one of a store whose
	// webhook is off or no longer wants the ticket's kind (or whose ticket is gone) would be
	// dropped unsent, and the operator's dead letter lost with an OK.
	var state, why string
	err = a.db.QueryRow(ctx, `
		WITH cur AS (
			SELECT d.state, CASE
				WHEN w.store_id IS NULL THEN 'the store has no webhook'
				WHEN NOT w.enabled THEN 'the store''s webhook is disabled'
				WHEN t.ticket_id IS NULL THEN 'its ticket is gone (past retention)'
				WHEN cardinality(w.kinds) > 0 AND NOT t.kind = ANY (w.kinds) THEN
					'the store''s webhook kinds (' || array_to_string(w.kinds, ', ') || ') leave out its ticket''s kind (' || t.kind || ')'
				ELSE '' END AS why
			FROM webhook_deliveries d
			LEFT JOIN store_webhooks w ON w.store_id = d.store_id
			LEFT JOIN tickets t ON t.ticket_id = d.ticket_id AND t.store_id = d.store_id
			WHERE d.id = $1 FOR UPDATE OF d),
		upd AS (UPDATE webhook_deliveries d SET state = 'pending', attempts = 0, done_time = NULL, create_time = now(),
			next_attempt_time = greatest(now(), (SELECT w.retry_time FROM store_webhooks w WHERE w.store_id = d.store_id))
			WHERE id = $1 AND state = 'failed' AND (SELECT why FROM cur) = '' RETURNING 1)
		SELECT state, why FROM cur`, id).Scan(&state, &why)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, a.fail(ctx, "", rpcerr.NotFound("webhook delivery", id))
	}
	if err != nil {
		return nil, a.internal(ctx, "replay delivery", err)
	}
	if state != "failed" {
		return nil, a.fail(ctx, "", rpcerr.FailedPrecondition("delivery_id: delivery %s is %s, not failed; only dead letters are replayed", id, state))
	}
	if why != "" {
		return nil, a.fail(ctx, "", rpcerr.FailedPrecondition("delivery_id: delivery %s would not be sent: %s; kept as a dead letter", id, why))
	}
	a.wakeWebhooks()
	a.log.InfoContext(ctx, "webhook delivery replayed", "delivery", id, "by", adminName(ctx))
	return connect.NewResponse(&posv1.ReplayDeliveryResponse{}), nil
}
