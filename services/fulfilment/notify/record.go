package notify

import (
	"context"
	"time"

	"github.com/handoff-dev/handoff/internal/gather"
	"github.com/handoff-dev/handoff/internal/rounds"
)

// outcome is what a send came to, for its row.
type outcome struct {
	id string
	// token is the row's attempts when it was claimed: a row whose lease lapsed and was claimed
	// again meanwhile is left to its new holder.
	token     int
	attempts  int
	state     string // "pending" (a retry, or handed over), "sent", "skipped" (stale) or "dead"
	lastError string
	wait      time.Duration // until the retry, for "pending"
	// handOver: interrupted by shutdown, due again at once; other copies are woken for it.
	handOver bool
}

// recordSQL writes the outcomes of many sends in one statement, and wakes the other
// dispatchers when rows were handed over.
const recordSQL = `
WITH o AS (
	SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::bool[])
		AS o(id, token, attempts, state, last_error, wait_us, hand_over)),
upd AS (
	UPDATE notifications n SET
		state = o.state,
		attempts = o.attempts,
		last_error = o.last_error,
		sending_until = NULL,
		next_attempt_at = CASE WHEN o.state = 'pending' THEN now() + o.wait_us * interval '1 microsecond' ELSE n.next_attempt_at END,
		sent_time = CASE WHEN o.state IN ('sent', 'skipped') THEN now() ELSE n.sent_time END,
		fail_time = CASE WHEN o.state = 'dead' THEN now() ELSE n.fail_time END
	FROM o WHERE n.id = o.id AND n.attempts = o.token AND n.state = 'pending'
	RETURNING o.hand_over)
SELECT pg_notify(` + channelSQL + `, '') WHERE EXISTS (SELECT 1 FROM upd WHERE hand_over)`

// maxRecordBatch bounds one recording statement.
const maxRecordBatch = 500

// recorder writes the outcomes of sends: those that come within RoundInterval of the first go
// in one statement, so a busy dispatcher records many per round trip instead of one each. The
// wait delays only the row's update, never a send.
type recorder struct {
	d       *Dispatcher
	in      chan outcome
	retries *rounds.Retries // when outcomes that are to be retried fall due
}

func newRecorder(d *Dispatcher) *recorder {
	return &recorder{d: d, in: make(chan outcome, d.cfg.Concurrency*max(len(d.channels), 1)), retries: rounds.NewRetries()}
}

// add hands over a send's outcome; it waits while the recorder is behind.
func (r *recorder) add(o outcome) { r.in <- o }

// close ends run once everything added is recorded. No add may follow.
func (r *recorder) close() { close(r.in) }

func (r *recorder) run() { gather.Run(r.in, r.d.cfg.RoundInterval, maxRecordBatch, r.write) }

func (r *recorder) write(batch []outcome) {
	n := len(batch)
	var (
		ids, states, errs = make([]string, n), make([]string, n), make([]string, n)
		tokens, attempts  = make([]int32, n), make([]int32, n)
		waits             = make([]int64, n)
		handOver          = make([]bool, n)
	)
	for i, o := range batch {
		ids[i], states[i], errs[i] = o.id, o.state, o.lastError
		tokens[i], attempts[i] = int32(o.token), int32(o.attempts)
		waits[i], handOver[i] = o.wait.Microseconds(), o.handOver
	}
	// Recorded even when shutting down, so the rows do not wait out their lease.
	ctx, cancel := context.WithTimeout(context.Background(), rounds.LastWrite)
	defer cancel()
	_, err := r.d.pool.Exec(ctx, recordSQL, ids, tokens, attempts, states, errs, waits, handOver)
	now := time.Now()
	if err != nil {
		// The rows keep their lease and fall due again when it ends.
		r.d.log.Warn("notify: recording delivery outcomes failed; the rows are retried after their lease", "count", n, "err", err)
		r.retries.Note(now.Add(r.d.lease))
		return
	}
	for _, o := range batch {
		switch {
		case o.state == "pending" && !o.handOver:
			r.retries.Note(now.Add(o.wait))
		case o.state != "pending":
			r.d.worked.Store(true)
		}
	}
}
