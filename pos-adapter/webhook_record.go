package posadapter

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/gather"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/rounds"
)

// deliveryOutcome is what an attempt came to, for its row.
type deliveryOutcome struct {
	id, storeID string
	state       string // deliveryPending (a retry), "delivered", "failed" (dead letter) or "dropped"
	attempts    int
	lastError   string
	wait        time.Duration // until the retry, for "pending"
	// probe: the attempt tried the endpoint of a store in backoff (claimDeliveriesSQL).
	probe bool
	// unanswered: the store's endpoint did not take the delivery (no answer, or not a 2xx).
	unanswered bool
	// retryAfter: the vendor asked for this wait (Retry-After on a 429 or 503), which its store
	// then waits at least (writeWithBackoff).
	retryAfter time.Duration
}

// deliveryPending is the state of a delivery still to be made (again).
const deliveryPending = "pending"

// recordDeliveriesSQL writes the outcomes of many attempts in one statement. The pending state
// is a parameter ($6), not the constant: the generic plan would otherwise walk the partial index
// of pending deliveries (the dispatcher's), whose entries of delivered rows stay until a vacuum,
// instead of looking each delivery up by id.
//
// A delivery made wins over a dead letter: a row that got an outcome was pending when claimed,
// so one found failed was made a dead letter while in flight (backOffStoresSQL gives up on a
// store's pending deliveries past their time, the one in flight among them; or a copy whose
// claim lapsed sent it too), and the vendor has taken its ticket all the same.
//
// It answers how many deliveries it made dead letters (pending until then): those are counted
// on handoff_pos_webhook_deliveries_total once the write commits, and only those (one made a
// dead letter in flight by backOffStoresSQL is counted there).
const recordDeliveriesSQL = `
WITH u AS (
UPDATE webhook_deliveries d SET state = o.state, attempts = o.attempts, last_error = o.last_error,
	done_time = CASE WHEN o.state = 'pending' THEN d.done_time ELSE now() END,
	next_attempt_time = CASE WHEN o.state = 'pending' THEN now() + o.wait_us * interval '1 microsecond' ELSE d.next_attempt_time END
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::bigint[]) AS o(id, state, attempts, last_error, wait_us)
WHERE d.id = o.id AND (d.state = $6 OR (d.state = 'failed' AND o.state = 'delivered'))
RETURNING o.state)
SELECT count(*) FILTER (WHERE state = 'failed') FROM u`

// maxRecordBatch bounds one recording statement.
const maxRecordBatch = 500

// maxRecordTries bounds the writes of one batch that lose a race (pgdb.LostRace).
const maxRecordTries = 3

// deliveryRecorder writes the outcomes of attempts: those that come within webhookRoundGap
// of the first go in one statement, so a busy dispatcher records many per round trip. The wait
// delays only the row's update, never a delivery.
type deliveryRecorder struct {
	a       *Adapter
	in      chan deliveryOutcome
	retries *rounds.Retries // when outcomes that are to be retried fall due
}

func newDeliveryRecorder(a *Adapter) *deliveryRecorder {
	return &deliveryRecorder{a: a, in: make(chan deliveryOutcome, webhookWorkers), retries: rounds.NewRetries()}
}

// add hands over an attempt's outcome; it waits while the recorder is behind.
func (r *deliveryRecorder) add(o deliveryOutcome) { r.in <- o }

// close ends run once everything added is recorded. No add may follow.
func (r *deliveryRecorder) close() { close(r.in) }

func (r *deliveryRecorder) run() { gather.Run(r.in, webhookRoundGap, maxRecordBatch, r.write) }

func (r *deliveryRecorder) write(batch []deliveryOutcome) {
	n := len(batch)
	ids, states, errs := make([]string, n), make([]string, n), make([]string, n)
	attempts, waits := make([]int32, n), make([]int64, n)
	for i, o := range batch {
		ids[i], states[i], errs[i], attempts[i], waits[i] = o.id, o.state, o.lastError, int32(o.attempts), o.wait.Microseconds()
	}
	// Recorded even when shutting down: a delivery made and not recorded is made again.
	ctx, cancel := context.WithTimeout(context.Background(), rounds.LastWrite)
	defer cancel()
	var (
		due []time.Time
		err error
	)
	// The common case, every endpoint answering, is the one statement it always was; only a
	// failed attempt or a probe's outcome changes a store's backoff.
	backoff := slices.ContainsFunc(batch, func(o deliveryOutcome) bool { return o.probe || o.unanswered })
	// Two copies' writes can deadlock: a statement locks its rows in the order its plan meets
	// them, and a backoff puts off the store's deliveries in flight at another copy. Postgres
	// aborts one, which did nothing; written again at once, its deliveries are not left
	// claimed until the lease lapses and then sent again.
	for try := 1; ; try++ {
		if backoff {
			due, err = r.writeWithBackoff(ctx, batch, ids, states, attempts, errs, waits)
		} else {
			var dead int64
			if err = r.a.db.QueryRow(ctx, recordDeliveriesSQL, ids, states, attempts, errs, waits, deliveryPending).Scan(&dead); err == nil {
				webhookDeliveries.WithLabelValues("dead").Add(float64(dead))
			}
		}
		if err == nil || try == maxRecordTries || !pgdb.LostRace(err) {
			break
		}
		r.a.log.Info("webhook outcomes lost a race with another copy's write; writing them again", "count", n, "err", err)
	}
	now := time.Now()
	if err != nil {
		// The deliveries keep their claim and fall due again when it lapses.
		r.a.log.Warn("record webhook delivery outcomes failed; they are retried when their claim lapses", "count", n, "err", err)
		r.retries.Note(now.Add(r.a.webhookLease()))
		return
	}
	for _, o := range batch {
		if o.state == deliveryPending {
			r.retries.Note(now.Add(o.wait))
		}
	}
	for _, t := range due {
		r.retries.Note(t)
	}
}

// lockStoreWebhooksSQL locks the webhooks of the stores given, in store order, and reads their
// backoff. A transaction that changes a store's backoff or moves its deliveries holds it first,
// as the claim does (SKIP LOCKED), so that no two of them take the store locks in two orders.
// (The deliveries' own locks have no one order: see write.)
const lockStoreWebhooksSQL = `SELECT store_id, retry_time, failures FROM store_webhooks WHERE store_id = ANY ($1) ORDER BY store_id FOR UPDATE`

// backOffStoresSQL starts or holds the backoff of stores whose endpoint did not answer: the
// store waits until retry_time ($2 µs from now; NULL keeps the wait it has, when the failure
// was not its probe but an attempt claimed before the backoff began), and its pending
// deliveries are put off until then: those due sooner, and those parked at the old wait ($4)
// for a probe that has now failed. So no delivery of the store is due before its wait is over,
// when one of them probes the endpoint again (claimDeliveriesSQL). A delivery past its give-up
// time ($6 µs after it was queued) is not put off but kept as a dead letter: its store's
// endpoint failed when its time was up, and nothing else would try it. (One in flight is given
// up on too, when its claim ends before the wait; should the vendor take it after all, its
// outcome still makes it delivered: recordDeliveriesSQL.)
const backOffStoresSQL = `
WITH s AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::timestamptz[], $5::text[])
	AS s(store_id, wait_us, failures, old_retry, last_error)),
g AS (
	UPDATE store_webhooks w SET retry_time = coalesce(now() + s.wait_us * interval '1 microsecond', w.retry_time),
		failures = coalesce(s.failures, w.failures)
	FROM s WHERE w.store_id = s.store_id
	RETURNING w.store_id, w.retry_time, s.old_retry, s.last_error),
moved AS (
	UPDATE webhook_deliveries d SET next_attempt_time = g.retry_time,
		state = CASE WHEN d.create_time <= now() - $6::bigint * interval '1 microsecond' THEN 'failed' ELSE d.state END,
		done_time = CASE WHEN d.create_time <= now() - $6::bigint * interval '1 microsecond' THEN now() ELSE d.done_time END,
		last_error = CASE WHEN d.create_time <= now() - $6::bigint * interval '1 microsecond' THEN g.last_error ELSE d.last_error END
	FROM g WHERE d.store_id = g.store_id AND d.state = 'pending'
		AND (d.next_attempt_time < g.retry_time OR d.next_attempt_time = g.old_retry)
	RETURNING d.state)
SELECT count(*) FILTER (WHERE state = 'failed') FROM moved`

// endBackoffSQL ends the backoff of stores whose probe was answered ($3 true), or opens it at
// once for stores whose probe sent nothing ($3 false: the webhook was turned off or narrowed,
// the ticket is gone), and makes the deliveries parked for the probe ($2) due now: a vendor POS
// that answers again gets the rest at once.
const endBackoffSQL = `
WITH s AS (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS s(store_id, old_retry, answered)),
g AS (
	UPDATE store_webhooks w SET retry_time = CASE WHEN s.answered THEN NULL ELSE now() END,
		failures = CASE WHEN s.answered THEN 0 ELSE w.failures END
	FROM s WHERE w.store_id = s.store_id)
UPDATE webhook_deliveries d SET next_attempt_time = now()
FROM s WHERE d.store_id = s.store_id AND d.state = 'pending' AND d.next_attempt_time = s.old_retry`

// writeWithBackoff records a batch with a failed attempt or a probe's outcome, and changes
// the backoff of the stores concerned (claimDeliveriesSQL): an endpoint that did not answer
// puts its store in backoff, or doubles it when a probe failed; one that answered ends it. It
// gives the times the dispatcher should look again.
func (r *deliveryRecorder) writeWithBackoff(ctx context.Context, batch []deliveryOutcome, ids, states []string, attempts []int32, errs []string, waits []int64) ([]time.Time, error) {
	type store struct {
		retry                       *time.Time
		failures                    int
		answered, unanswered, probe bool // in this batch: a delivery made, one not, a probe's outcome
		lastError                   string
		retryAfter                  time.Duration // the longest wait the vendor asked for in this batch
	}
	var deadLetters int64 // deliveries given up by the committed transaction
	stores := map[string]*store{}
	var storeIDs []string
	for _, o := range batch {
		s := stores[o.storeID]
		if s == nil {
			s = &store{}
			stores[o.storeID] = s
			storeIDs = append(storeIDs, o.storeID)
		}
		s.answered = s.answered || o.state == "delivered"
		if o.unanswered {
			s.unanswered, s.lastError = true, o.lastError
		}
		s.probe = s.probe || o.probe
		s.retryAfter = max(s.retryAfter, o.retryAfter)
	}
	var due []time.Time
	err := pgx.BeginFunc(ctx, r.a.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, lockStoreWebhooksSQL, storeIDs)
		if err != nil {
			return fmt.Errorf("lock store webhooks: %w", err)
		}
		for rows.Next() {
			var id string
			var retry *time.Time
			var failures int32
			if err := rows.Scan(&id, &retry, &failures); err != nil {
				rows.Close()
				return fmt.Errorf("lock store webhooks: %w", err)
			}
			stores[id].retry, stores[id].failures = retry, int(failures)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("lock store webhooks: %w", err)
		}
		var dead int64
		if err := tx.QueryRow(ctx, recordDeliveriesSQL, ids, states, attempts, errs, waits, deliveryPending).Scan(&dead); err != nil {
			return fmt.Errorf("record outcomes: %w", err)
		}
		deadLetters = dead

		var (
			backOff, backOffErrs []string
			backOffWaits         []*int64
			backOffFailures      []*int32
			backOffOld, endOld   []*time.Time
			end                  []string
			endAnswered          []bool
		)
		now := time.Now()
		for _, id := range storeIDs {
			s := stores[id]
			switch {
			// A vendor asking for a wait (Retry-After) gets it, whatever else the batch saw of its
			// store (another delivery taken just before): the store waits that long, and at least
			// its usual step, before it is probed.
			case s.retryAfter > 0 && (s.retry == nil || s.probe):
				failures := int32(s.failures + 1)
				wait := max(r.a.webhookBackoff(int(failures)), s.retryAfter).Microseconds()
				backOff, backOffErrs = append(backOff, id), append(backOffErrs, s.lastError)
				backOffWaits, backOffFailures, backOffOld = append(backOffWaits, &wait), append(backOffFailures, &failures), append(backOffOld, s.retry)
				due = append(due, now.Add(time.Duration(wait)*time.Microsecond))
			case s.retryAfter > 0 && s.retry != nil && now.Add(s.retryAfter).After(*s.retry): // sent before the backoff began: the vendor's wait is the longer
				wait := s.retryAfter.Microseconds()
				backOff, backOffErrs = append(backOff, id), append(backOffErrs, s.lastError)
				backOffWaits, backOffFailures, backOffOld = append(backOffWaits, &wait), append(backOffFailures, nil), append(backOffOld, s.retry)
				due = append(due, now.Add(s.retryAfter))
			case s.retryAfter > 0: // sent before the backoff began, which outlasts the vendor's wait: kept
				backOff, backOffErrs = append(backOff, id), append(backOffErrs, s.lastError)
				backOffWaits, backOffFailures, backOffOld = append(backOffWaits, nil), append(backOffFailures, nil), append(backOffOld, s.retry)
			case s.answered && s.retry != nil: // the endpoint answers again
				end, endOld, endAnswered = append(end, id), append(endOld, s.retry), append(endAnswered, true)
			case s.answered:
			case s.unanswered && (s.retry == nil || s.probe): // a backoff starts, or the next wait
				failures := int32(s.failures + 1)
				wait := r.a.webhookBackoff(int(failures)).Microseconds()
				backOff, backOffErrs = append(backOff, id), append(backOffErrs, s.lastError)
				backOffWaits, backOffFailures, backOffOld = append(backOffWaits, &wait), append(backOffFailures, &failures), append(backOffOld, s.retry)
				due = append(due, now.Add(time.Duration(wait)*time.Microsecond))
			case s.unanswered: // sent before the backoff began: it waits with the others
				backOff, backOffErrs = append(backOff, id), append(backOffErrs, s.lastError)
				backOffWaits, backOffFailures, backOffOld = append(backOffWaits, nil), append(backOffFailures, nil), append(backOffOld, s.retry)
			case s.probe && s.retry != nil: // the probe sent nothing: another may try at once
				end, endOld, endAnswered = append(end, id), append(endOld, s.retry), append(endAnswered, false)
			}
		}
		if len(backOff) > 0 {
			var givenUp int64
			if err := tx.QueryRow(ctx, backOffStoresSQL, backOff, backOffWaits, backOffFailures, backOffOld, backOffErrs,
				r.a.cfg.WebhookGiveUpAfter.Microseconds()).Scan(&givenUp); err != nil {
				return fmt.Errorf("back off stores: %w", err)
			}
			deadLetters += givenUp
			if givenUp > 0 {
				r.a.log.Warn("webhook deliveries of stores whose endpoint fails kept as dead letters: their time is up",
					"count", givenUp, "give_up_after", r.a.cfg.WebhookGiveUpAfter)
			}
		}
		if len(end) > 0 {
			if _, err := tx.Exec(ctx, endBackoffSQL, end, endOld, endAnswered); err != nil {
				return fmt.Errorf("end store backoff: %w", err)
			}
			due = append(due, now)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record webhook outcomes: %w", err)
	}
	webhookDeliveries.WithLabelValues("dead").Add(float64(deadLetters)) // once committed
	return due, nil
}
