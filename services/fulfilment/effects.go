package fulfilment

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// inventoryCallTimeout bounds one release, commit or extend call.
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
// (the worker died mid-call, say). Longer than any inventory call.
const effectLease = 30 * time.Second

// effectsRound claims the due effects that are first in line for their order (an order's
// effects run in the order they were recorded: a line's release before the commit of the
// rest), calls inventory for each, and deletes those done; failures are retried with backoff.
// Claiming moves an effect's due time one lease ahead in a statement of its own, so no
// connection is held while inventory answers, and other workers (SKIP LOCKED, then the later
// due time) leave it alone. Inventory's release, commit and extend are idempotent, so an
// effect done again (its worker died before the delete) changes nothing.
func (s *Service) effectsRound(ctx context.Context) (int, error) {
	rows, err := s.db.Query(ctx, `
		UPDATE order_effects SET due = now() + $2::bigint * interval '1 millisecond'
		WHERE id IN (
			SELECT e.id FROM order_effects e
			WHERE e.due <= now()
			  AND NOT EXISTS (SELECT 1 FROM order_effects p WHERE p.order_id = e.order_id AND p.id < e.id)
			ORDER BY e.id LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING id, order_id, kind, line_id, reason, deadline, attempts`, effectsBatch, effectLease.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("claim effects: %w", err)
	}
	var batch []effect
	for rows.Next() {
		var e effect
		var kind, reason int16
		var deadline *time.Time
		if err := rows.Scan(&e.id, &e.orderID, &kind, &e.lineID, &reason, &deadline, &e.attempt); err != nil {
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

	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	slots := make(chan struct{}, 16)
	for i, e := range batch {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			errs[i] = s.applyEffect(ctx, e)
		})
	}
	wg.Wait()

	// Record outcomes even when shutting down, so done effects are not done again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var w writeBatch
	var done []int64
	for i, e := range batch {
		if errs[i] == nil {
			done = append(done, e.id)
			continue
		}
		if e.kind == domain.ExtendHolds && !uncertain(errs[i]) {
			// A refused extension (a deadline passed meanwhile, say) cannot succeed later; the
			// timer loop asks again with a fresh deadline while the order is open.
			s.log.Error("inventory refused to extend holds; dropped", "order_id", e.orderID, "deadline", e.deadline, "err", errs[i])
			done = append(done, e.id)
			continue
		}
		backoff := min(time.Second<<min(e.attempt, 6), time.Minute)
		s.log.Warn("inventory effect failed; will retry", "order_id", e.orderID, "effect", e.kind, "attempt", e.attempt+1, "retry_in", backoff, "err", errs[i])
		_, _ = w.Exec(ctx, `UPDATE order_effects SET attempts = attempts + 1, last_error = $2,
			due = now() + $3::bigint * interval '1 millisecond' WHERE id = $1`,
			e.id, status.Convert(errs[i]).Message(), backoff.Milliseconds())
	}
	if len(done) > 0 {
		_, _ = w.Exec(ctx, `DELETE FROM order_effects WHERE id = ANY($1)`, done)
	}
	if err := w.sendAlone(ctx, s.db); err != nil {
		return 0, fmt.Errorf("record effect outcomes (they run again after their lease): %w", err)
	}
	return len(batch), nil
}

func (s *Service) applyEffect(ctx context.Context, e effect) error {
	ctx, cancel := context.WithTimeout(ctx, inventoryCallTimeout)
	defer cancel()
	switch e.kind {
	case domain.ReleaseAll:
		return s.inv.release(ctx, e.orderID, "", e.reason)
	case domain.ReleaseLine:
		return s.inv.release(ctx, e.orderID, e.lineID, e.reason)
	case domain.CommitAll:
		return s.inv.commit(ctx, e.orderID)
	case domain.ExtendHolds:
		res, err := s.inv.extend(ctx, e.orderID, e.deadline)
		if err == nil && len(res.GetHolds()) == 0 {
			// Only when inventory could not be reached for longer than the placement hold
			// lived (or a bug): the order is open but no stock is held for it any more.
			s.log.Error("order is open but inventory holds nothing for it any more", "order_id", e.orderID)
		}
		return err
	}
	return fmt.Errorf("unknown effect kind %d", e.kind)
}
