-- +goose Up

-- An order's escalation timer is ended by marking it cleared, not by deleting it: a confirmed
-- event handled after the order's next event (two copies side by side, a retried batch) would
-- otherwise set the timer again and escalate an order already being prepared. Cleared rows
-- are removed after the ticket retention, like the tickets.
ALTER TABLE escalation_timers ADD COLUMN cleared boolean NOT NULL DEFAULT false;
DROP INDEX escalation_timers_due;
CREATE INDEX escalation_timers_due ON escalation_timers (due_time) WHERE NOT cleared;
CREATE INDEX escalation_timers_cleared ON escalation_timers (due_time) WHERE cleared;

-- +goose Down
DROP INDEX escalation_timers_cleared;
DROP INDEX escalation_timers_due;
DELETE FROM escalation_timers WHERE cleared;
ALTER TABLE escalation_timers DROP COLUMN cleared;
CREATE INDEX escalation_timers_due ON escalation_timers (due_time);
