package fulfilment

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// redactBatch bounds the orders one transaction of RedactEnded clears, so that a first sweep
// of years of orders holds no long transaction and no lock on many rows.
const redactBatch = 1000

// RedactEndedSQL clears the contact fields (pickup_name, email, customer_note, and the
// checkout request kept in placement) of up to $2 orders ended more than $1 microseconds ago,
// found through orders_to_redact (00015), and returns their ids. Orders another transaction
// holds are left to the next round. The customer id stays: the shopper still sees their past
// orders (ForgetCustomer erases it).
const RedactEndedSQL = `UPDATE orders SET pickup_name = '', email = '', customer_note = '', placement = NULL,
		redact_time = now(), writes = writes + 1
	WHERE id = ANY (ARRAY(
		SELECT id FROM orders
		WHERE redact_time IS NULL AND state IN (5, 6, 7, 8)
		  AND create_time < now() - $1::bigint * interval '1 microsecond' -- the index's column
		  AND update_time < now() - $1::bigint * interval '1 microsecond' -- when it ended
		ORDER BY create_time
		LIMIT $2
		FOR UPDATE SKIP LOCKED))
	RETURNING id`

// RedactEnded clears the personal contact fields of every order ended longer than
// PersonalDataRetention ago, and deletes their notifications, in batches, and returns how many
// orders it cleared.
func (s *Service) RedactEnded(ctx context.Context) (int64, error) {
	var total int64
	for {
		var n int
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, RedactEndedSQL, s.cfg.PersonalDataRetention.Microseconds(), redactBatch)
			if err != nil {
				return fmt.Errorf("redact ended orders: %w", err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("redact ended orders: %w", err)
			}
			n = len(ids)
			_, err = notify.ForgetOrders(ctx, tx, ids)
			return err
		})
		if err != nil {
			return total, err
		}
		total += int64(n)
		if n < redactBatch {
			return total, nil
		}
	}
}

// runRedaction runs RedactEnded hourly until ctx ends, unless the retention is negative (kept
// for ever).
func (s *Service) runRedaction(ctx context.Context) {
	if s.cfg.PersonalDataRetention < 0 {
		return
	}
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := s.RedactEnded(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn("clearing the personal data of ended orders failed; trying again in an hour", "err", err)
		case n > 0:
			s.log.Info("personal data of ended orders cleared", "orders", n, "ended_before", s.cfg.PersonalDataRetention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
