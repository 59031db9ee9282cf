-- When an escalation timer's order was confirmed: its due time counts the store's open hours
-- from then (sweepEscalations), and may be moved on past a night, so it cannot be worked back
-- from the due time. Timers set before this column have none: their due time less
-- escalate_after is their confirmation.

-- +goose Up
ALTER TABLE escalation_timers ADD COLUMN confirm_time timestamptz;

-- +goose Down
ALTER TABLE escalation_timers DROP COLUMN confirm_time;
