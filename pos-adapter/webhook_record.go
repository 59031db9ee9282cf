package posadapter

import (
	"context"
	"time"

	"github.com/handoff-dev/handoff/internal/gather"
	"github.com/handoff-dev/handoff/internal/rounds"
)

// deliveryOutcome is what an attempt came to, for its row.
type deliveryOutcome struct {
	id        string
	state     string // deliveryPending (a retry), "delivered", "failed" (dead letter) or "dropped"
	attempts  int
	lastError string
	wait      time.Duration // until the retry, for "pending"
}

// deliveryPending is the state of a delivery still to be made (again).
const deliveryPending = "pending"

// recordDeliveriesSQL writes the outcomes of many attempts in one statement. The pending state
// is a parameter ($6), not the constant: the generic plan would otherwise walk the partial index
// of pending deliveries (the dispatcher's), whose entries of delivered rows stay until a vacuum,
// instead of looking each delivery up by id.
const recordDeliveriesSQL = `
UPDATE webhook_deliveries d SET state = o.state, attempts = o.attempts, last_error = o.last_error,
	done_time = CASE WHEN o.state = 'pending' THEN d.done_time ELSE now() END,
	next_attempt_time = CASE WHEN o.state = 'pending' THEN now() + o.wait_us * interval '1 microsecond' ELSE d.next_attempt_time END
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::bigint[]) AS o(id, state, attempts, last_error, wait_us)
WHERE d.id = o.id AND d.state = $6`

// maxRecordBatch bounds one recording statement.
const maxRecordBatch = 500

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
	_, err := r.a.db.Exec(ctx, recordDeliveriesSQL, ids, states, attempts, errs, waits, deliveryPending)
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
}
