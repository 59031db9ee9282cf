package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/rounds"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// inventoryCallTimeout bounds one change_holds call (a round's releases, commits, extensions).
const inventoryCallTimeout = 5 * time.Second

// effectsBatch is how many effects one round of the worker takes.
const effectsBatch = 64

// effect is one row of order_effects.
type effect struct {
	id       int64
	orderID  string
	kind     domain.Effect
	lineID   string
	reason   inventoryv1.ReleaseReason
	deadline time.Time
	attempt  int
	// claims counts the times the effect was taken, this one included.
	claims int
	// wantHolds is how many holds a commit should end, or an extension find open (0: not
	// checked).
	wantHolds int
	// resent: sent again in this round, after a request with it was done but its answer was
	// too big to come back (see changeHoldsInParts); a commit then finds its holds ended.
	resent bool
	// created is when the effect was recorded, with its transition: a commit's hand-over.
	created time.Time
}

// runEffects carries out recorded inventory effects until ctx ends: at once when a transition
// of this process recorded some, and every SweepInterval for those of other (or dead)
// processes and for retries.
func (s *Service) runEffects(ctx context.Context) {
	tick := time.NewTicker(s.cfg.SweepInterval)
	defer tick.Stop()
	for {
		n, err := s.effectsRound(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("inventory effects round failed; trying again", "err", err)
		} else if n == effectsBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.effectsWake:
		case <-tick.C:
		}
	}
}

// effectLease is how long a claimed effect is left to its worker before another may take it
// (the worker died mid-call, say). Longer than any inventory call. A variable for tests.
var effectLease = 30 * time.Second

// effectsRoundTime bounds a round's inventory calls and lapse checks, counted from before its
// claim: half the lease, so that its outcomes (rounds.LastWrite more) are recorded while the
// lease holds. A round may otherwise outlive its lease (several parts of 5 s each, halves sent
// again, lapse checks waiting on locks), and another copy takes the same effects while it still
// works them: sent twice side by side, and the next effect of an order sent while the one before
// it is still in flight, so that inventory may make them out of order. What is not sent by then
// is left for the next claim (errRoundOver).
func effectsRoundTime() time.Duration { return effectLease / 2 }

// errRoundOver is the error of effects not sent because their round's time was up (or its
// worker stopping): nothing was done, so they are due again at once, not as a failed attempt.
var errRoundOver = errors.New("not sent: the effects round ran out of time")

// claimEffectsSQL claims up to $1 due effects that are first in line for their order (the
// lowest id of the order's rows, due or not: an order's effects run in the order they were
// recorded, a line's release before the commit of the rest), oldest first, by moving their
// due time one lease ($2 ms) ahead, so that other workers leave them alone.
//
// Its shape is chosen so that no plan can be worse than a few passes over the queue. The
// table is a queue: the statistics Postgres plans with are often taken just after the worker
// emptied it (no rows, the dead ones' pages still there), and a backlog then meets a plan made
// for one row. Written as a self-join (NOT EXISTS an earlier effect of the order), that plan
// was a nested loop of whole-index scans, re-run for every candidate: 1.4 s and 3.8 million
// buffers for 1,635 queued effects, stalling the machine while the queue grew. Here the heads
// come from one DISTINCT ON pass, taken once (an InitPlan), and the UPDATE finds them by id.
// A second worker that read the same heads waits for the first's claim and then skips them:
// Postgres checks "due <= now()" again on the row the first one wrote.
const claimEffectsSQL = `
	UPDATE order_effects SET due = now() + $2::bigint * interval '1 millisecond', claims = claims + 1
	WHERE id = ANY (ARRAY(
		SELECT h.id FROM (SELECT DISTINCT ON (order_id) id, due FROM order_effects ORDER BY order_id, id) h
		WHERE h.due <= now()
		ORDER BY h.id LIMIT $1))
	  AND due <= now()
	RETURNING id, order_id, kind, line_id, reason, deadline, attempts, claims, coalesce(want_holds, 0), create_time`

// effectsRound claims due effects (claimEffectsSQL), sends them to inventory in one
// change_holds request, and deletes those done; failures are retried with backoff.
// Claiming is a statement of its own, so no connection is held while inventory answers.
// Inventory's release, commit and extend are idempotent, so an effect done again (its worker
// died before the delete) changes nothing.
func (s *Service) effectsRound(ctx context.Context) (int, error) {
	start := time.Now() // before the claim, so the lease ends no sooner than start+effectLease
	rows, err := s.db.Query(ctx, claimEffectsSQL, effectsBatch, effectLease.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("claim effects: %w", err)
	}
	var batch []effect
	for rows.Next() {
		var e effect
		var kind, reason int16
		var deadline *time.Time
		if err := rows.Scan(&e.id, &e.orderID, &kind, &e.lineID, &reason, &deadline, &e.attempt, &e.claims, &e.wantHolds, &e.created); err != nil {
			rows.Close()
			return 0, fmt.Errorf("scan effect: %w", err)
		}
		e.kind, e.reason = domain.Effect(kind), inventoryv1.ReleaseReason(reason)
		if deadline != nil {
			e.deadline = *deadline
		}
		batch = append(batch, e)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("claim effects: %w", err)
	}
	if len(batch) == 0 {
		return 0, nil
	}

	rctx, cancelRound := context.WithDeadline(ctx, start.Add(effectsRoundTime()))
	errs := s.applyEffects(rctx, batch)
	cancelRound()

	// Record outcomes even when shutting down, so done effects are not done again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rounds.LastWrite)
	defer cancel()
	// Every write is fenced by the claim count: an effect claimed again since (this round
	// outlived its lease after all) is left to the worker that has it now.
	var w writeBatch
	var done []int64
	var doneClaims []int32
	var refused []effect
	for i, e := range batch {
		if errs[i] == nil {
			done, doneClaims = append(done, e.id), append(doneClaims, int32(e.claims))
			continue
		}
		if errors.Is(errs[i], errRoundOver) {
			_, _ = w.Exec(ctx, `UPDATE order_effects SET due = now() WHERE id = $1 AND claims = $2`, e.id, e.claims)
			continue
		}
		if e.kind == domain.ExtendHolds && !uncertain(errs[i]) {
			// A refused extension (a deadline passed meanwhile, say) cannot succeed later; the
			// timer loop asks again with a fresh deadline while the order is open (refuseExtensions).
			s.log.Error("inventory refused to extend holds; dropped, and the order looked at again", "order_id", e.orderID, "deadline", e.deadline, "err", errs[i])
			done, doneClaims = append(done, e.id), append(doneClaims, int32(e.claims))
			refused = append(refused, e)
			continue
		}
		backoff := min(time.Second<<min(e.attempt, 6), time.Minute)
		s.log.Warn("inventory effect failed; will retry", "order_id", e.orderID, "effect", e.kind, "attempt", e.attempt+1, "retry_in", backoff, "err", errs[i])
		_, _ = w.Exec(ctx, `UPDATE order_effects SET attempts = attempts + 1, last_error = $2,
			due = now() + $3::bigint * interval '1 millisecond' WHERE id = $1 AND claims = $4`,
			e.id, status.Convert(errs[i]).Message(), backoff.Milliseconds(), e.claims)
	}
	if len(done) > 0 {
		_, _ = w.Exec(ctx, `DELETE FROM order_effects o USING unnest($1::bigint[], $2::int[]) d(id, claims)
			WHERE o.id = d.id AND o.claims = d.claims`, done, doneClaims)
	}
	refuseExtensions(ctx, &w, refused)
	if err := w.sendAlone(ctx, s.db); err != nil {
		return 0, fmt.Errorf("record effect outcomes (they run again after their lease): %w", err)
	}
	return len(batch), nil
}

// refuseExtensionsSQL has the open orders whose extension was dropped ($1, with the deadline
// it asked for, $2) looked at by the timer loop at once, their holds taken as ending now. The
// order took that deadline when the extension was recorded (keepHolds), so it would not ask
// again before its next timer, or at all once the deadline had passed (order.timerAt), while
// its holds could be swept: an order kept open on stock nobody holds. Now keepHolds records a
// fresh extension, whose answer runs the lapse check (lapseIfUnheld). An order that has asked
// for another deadline since is left alone: that extension is queued already. The orders are
// locked in id order, as combined changes lock them. The write is counted (writes), as
// updateOrder counts its own: a copy of the order read before it is not written over it.
const refuseExtensionsSQL = `UPDATE orders o SET hold_deadline = now(), timer_at = now(), writes = o.writes + 1
	FROM (SELECT r.id, r.deadline FROM unnest($1::text[], $2::timestamptz[]) AS r(id, deadline)
		JOIN orders x ON x.id = r.id ORDER BY r.id FOR UPDATE OF x) r
	WHERE o.id = r.id AND o.hold_deadline = r.deadline AND o.state IN (2, 3, 4)`

// refuseExtensions queues in w the write of refuseExtensionsSQL for the dropped extensions.
func refuseExtensions(ctx context.Context, w *writeBatch, refused []effect) {
	if len(refused) == 0 {
		return
	}
	ids, deadlines := make([]string, len(refused)), make([]time.Time, len(refused))
	for i, e := range refused {
		ids[i], deadlines[i] = e.orderID, e.deadline
	}
	_, _ = w.Exec(ctx, refuseExtensionsSQL, ids, deadlines)
}

// applyEffects carries out a round's effects with one change_holds request (inventory makes
// them in one transaction, in order; more when the answer would not fit in one NATS message,
// see changeHoldsInParts), then checks what inventory did: orders whose extension
// found an active line without its open hold are cancelled (lapseIfUnheld), and commits that ended
// fewer holds than the order's active lines are reported (checkCommit). It returns each
// effect's error.
func (s *Service) applyEffects(ctx context.Context, batch []effect) []error {
	errs := make([]error, len(batch))
	results := make([]*inventoryv1.HoldChangeResult, len(batch))
	s.changeHoldsInParts(ctx, batch, results, errs)
	var wg sync.WaitGroup
	slots := make(chan struct{}, 16)
	for i, r := range results {
		if errs[i] != nil {
			continue
		}
		if r.GetErrorCode() != 0 {
			errs[i] = status.Error(codes.Code(r.GetErrorCode()), r.GetErrorMessage())
			continue
		}
		if batch[i].kind == domain.CommitAll {
			s.checkCommit(batch[i], len(r.GetHolds()), len(r.GetSoldLate()))
		}
		if batch[i].kind != domain.ExtendHolds {
			continue
		}
		if w := batch[i].wantHolds; w > 0 && openHolds(r.GetHolds()) >= w {
			// Every line held when the extension was recorded is held still; lines only ever
			// end, so the order cannot have more active now: nothing lapsed.
			continue
		}
		held := make(map[string]bool, len(r.GetHolds()))
		for _, h := range r.GetHolds() {
			if h.GetState() == inventoryv1.HoldState_HOLD_STATE_OPEN {
				held[h.GetLineId()] = true
			}
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			errs[i] = s.lapseIfUnheld(ctx, batch[i].orderID, held)
		})
	}
	wg.Wait()
	return errs
}

// holdAnswerBytes is about the most one hold takes in change_holds' answer: four ids of up to
// 128 bytes (order, line, store, SKU), its own id, a time, the framing.
const holdAnswerBytes = 640

// answerHolds is about how many holds inventory answers e with: an extension every open hold
// of the order, a commit or a release those it ends. An effect that does not say (a release of
// the whole order) is counted as one: most orders are small, and an answer too big all the
// same is sent again in halves (changeHoldsPart), rather than every round of releases being
// split for the few orders of 100 lines.
func (e effect) answerHolds() int {
	return max(e.wantHolds, 1)
}

// changeHoldsInParts sends batch to inventory in as few change_holds requests as keep each
// answer within the NATS max payload (a round of 64 orders of 100 lines answers with up to
// 6,400 holds, megabytes), one after another, and fills in each effect's result or error.
// Should an answer be too big all the same (ResourceExhausted: inventory made the changes, but
// its answer could not be sent), the part is sent again in halves, which is safe as every
// change is idempotent; without this, the same round would fail for ever, and the effects
// queued behind its extensions wait until the holds expire.
func (s *Service) changeHoldsInParts(ctx context.Context, batch []effect, results []*inventoryv1.HoldChangeResult, errs []error) {
	limit := int64(1 << 20) // NATS's default, until connected
	if mp := s.inv.nc.MaxPayload(); mp > 0 {
		limit = mp
	}
	budget := max(int(limit/holdAnswerBytes), 1)
	for start := 0; start < len(batch); {
		end, holds := start+1, batch[start].answerHolds()
		for end < len(batch) && holds+batch[end].answerHolds() <= budget {
			holds += batch[end].answerHolds()
			end++
		}
		s.changeHoldsPart(ctx, batch[start:end], results[start:end], errs[start:end])
		start = end
	}
}

// changeHoldsPart sends part in one change_holds request, in halves should its answer be too
// big to come back (see changeHoldsInParts).
func (s *Service) changeHoldsPart(ctx context.Context, part []effect, results []*inventoryv1.HoldChangeResult, errs []error) {
	if ctx.Err() != nil {
		for i := range errs {
			errs[i] = errRoundOver
		}
		return
	}
	changes := make([]*inventoryv1.HoldChange, len(part))
	for i, e := range part {
		changes[i] = e.change()
	}
	cctx, cancel := context.WithTimeout(ctx, inventoryCallTimeout)
	res, err := s.inv.changeHolds(cctx, changes)
	cancel()
	if rpcerr.Code(err) == codes.ResourceExhausted && len(part) > 1 {
		s.log.Warn("a round of effects or its answer was too big for NATS; sending it again in halves", "effects", len(part), "err", err)
		if !errors.Is(err, natsrpc.ErrNotSent) {
			// Inventory made the changes: a commit sent again may find its holds ended by this
			// attempt, and a shortfall it then sees is not certain.
			for i := range part {
				part[i].resent = true
			}
		}
		h := len(part) / 2
		s.changeHoldsPart(ctx, part[:h], results[:h], errs[:h])
		s.changeHoldsPart(ctx, part[h:], results[h:], errs[h:])
		return
	}
	if err == nil && len(res.GetResults()) != len(part) {
		err = fmt.Errorf("inventory answered %d hold changes with %d results", len(part), len(res.GetResults()))
	}
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return
	}
	copy(results, res.GetResults())
}

// change is the request for e.
func (e effect) change() *inventoryv1.HoldChange {
	switch e.kind {
	case domain.ReleaseAll, domain.ReleaseLine:
		line := ""
		if e.kind == domain.ReleaseLine {
			line = e.lineID
		}
		return &inventoryv1.HoldChange{Change: &inventoryv1.HoldChange_Release{Release: &inventoryv1.ReleaseHoldsRequest{
			OrderId: e.orderID, LineId: line, Reason: e.reason}}}
	case domain.CommitAll:
		// The hand-over's time: a count inventory has taken since did not find the goods.
		return &inventoryv1.HoldChange{Change: &inventoryv1.HoldChange_Commit{Commit: &inventoryv1.CommitHoldsRequest{
			OrderId: e.orderID, OccurTime: timestamppb.New(e.created)}}}
	case domain.ExtendHolds:
		return &inventoryv1.HoldChange{Change: &inventoryv1.HoldChange_Extend{Extend: &inventoryv1.ExtendHoldsRequest{
			OrderId: e.orderID, ExpireTime: timestamppb.New(e.deadline)}}}
	}
	return &inventoryv1.HoldChange{} // refused by inventory: an unknown kind is retried, and logged, until fixed
}

// commitShortfalls counts commits that ended fewer holds than the order had active lines.
var commitShortfalls = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "handoff_fulfilment_commit_shortfall_total",
	Help: "Hand-overs whose commit ended fewer holds at inventory than the order had active lines: goods left the store without their stock being held, so on-hand stays too high. certain=false: the commit was sent before (its outcome unknown), and that attempt may have committed the rest.",
}, []string{"certain"})

// Both series are on /metrics from the start, at 0, so that an alert sees the first shortfall.
func init() {
	commitShortfalls.WithLabelValues("true")
	commitShortfalls.WithLabelValues("false")
}

// lateSales counts hand-overs whose holds had expired before their commit reached inventory.
var lateSales = promauto.NewCounter(prometheus.CounterOpts{
	Name: "handoff_fulfilment_late_sales_total",
	Help: "Hand-overs with holds that had expired before their commit reached inventory (out of reach past the holds' grace): inventory sold the goods late, on hand no lower than what open orders reserve; its ledger notes any units short.",
})

// checkCommit reports a hand-over's commit that found holds expired (soldLate: inventory,
// out of reach past their grace, swept them before the commit came, and sold their goods
// late), or that ended fewer holds than the order's active lines: those had been released
// behind fulfilment's back, so the goods handed over were not held and on-hand does not drop
// for them. Nothing can undo the hand-over; an operator must correct the stock. On a commit's
// first claim the answer is certain; on a later one, or one sent again in its round (resent),
// the earlier attempt may have committed the holds (inventory answers a repeated commit with
// nothing), so it is reported as uncertain.
func (s *Service) checkCommit(e effect, committed, soldLate int) {
	if soldLate > 0 {
		lateSales.Inc()
		s.log.Warn("hand-over committed after some of its holds expired; inventory sold their goods late",
			"order_id", e.orderID, "committed_holds", committed, "sold_late", soldLate)
	}
	committed += soldLate
	if e.wantHolds == 0 || committed >= e.wantHolds {
		return
	}
	if e.claims <= 1 && !e.resent {
		commitShortfalls.WithLabelValues("true").Inc()
		s.log.Error("hand-over committed fewer holds than the order's lines: stock left without being held; correct on-hand",
			"order_id", e.orderID, "committed_holds", committed, "active_lines", e.wantHolds)
		return
	}
	commitShortfalls.WithLabelValues("false").Inc()
	s.log.Warn("repeated hand-over commit ended fewer holds than the order's lines; an earlier attempt may have committed them",
		"order_id", e.orderID, "committed_holds", committed, "active_lines", e.wantHolds, "claims", e.claims)
}

func openHolds(holds []*inventoryv1.Hold) int {
	n := 0
	for _, h := range holds {
		if h.GetState() == inventoryv1.HoldState_HOLD_STATE_OPEN {
			n++
		}
	}
	return n
}

// lapseReason is what the shopper and the store are told when an order's reservation lapsed.
const lapseReason = "the stock held for this order was released before it could be kept for pickup; nothing will be charged"

// lapseIfUnheld cancels an open order when inventory holds none of one of its active lines
// (held: the lines whose holds the extension found open): their holds ended while inventory
// could not be reached to extend them (an outage longer than the placement hold). Keeping it
// open would promise units that may be promised to someone else already, and hand-over would
// commit nothing for them, leaving on-hand too high. The lines are compared, not counted: a
// line marked unavailable since the extension was recorded still has its hold (its release
// comes after the extension), which must not stand in for a lapsed one. The rest of its holds
// are released by the cancellation's effect.
func (s *Service) lapseIfUnheld(ctx context.Context, orderID string, held map[string]bool) error {
	_, err := s.transact(ctx, orderID, scope{}, func(o *order, now time.Time) ([]change, error) {
		var lapsed []string
		for _, l := range o.Lines {
			if !l.Unavailable && !held[l.ID] {
				lapsed = append(lapsed, l.ID)
			}
		}
		if len(lapsed) == 0 {
			return nil, nil
		}
		c, err := o.step(domain.LapseReservation, lapseActor, lapseReason, "", now)
		var illegal *domain.IllegalTransition
		if errors.As(err, &illegal) {
			return nil, nil // already over (collected, cancelled): nothing is promised any more
		}
		if err != nil {
			return nil, err
		}
		s.log.Error("order cancelled: inventory no longer holds its stock", "order_id", o.ID, "unheld_lines", lapsed, "active_lines", o.activeLines())
		o.Reason = lapseReason
		return []change{c}, nil
	})
	return err
}

var lapseActor = systemActor("reservations")
