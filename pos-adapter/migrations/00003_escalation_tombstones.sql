-- +goose Up

-- An order's escalation timer is ended by marking it cleared, not by deleting it: a confirmed
-- event handled after the order's next event (two copies side by side, a retried batch) would
-- otherwise set the timer again and escalate an order already being prepared. A cleared timer
-- is due at 'infinity', so a copy still running the code before this migration never fires it;
-- cleared ones are removed once no confirmed event old enough to need them is read any more.
ALTER TABLE escalation_timers ADD COLUMN cleared_time timestamptz;
CREATE INDEX escalation_timers_cleared ON escalation_timers (cleared_time) WHERE cleared_time IS NOT NULL;

-- +goose Down
DELETE FROM escalation_timers WHERE cleared_time IS NOT NULL;
DROP INDEX escalation_timers_cleared;
ALTER TABLE escalation_timers DROP COLUMN cleared_time;
