-- 00003 was rewritten in place on 2026-11-24 (b982b12 marked a cleared timer with a boolean
-- cleared, 308f769 with cleared_time and a due time of 'infinity'). A database migrated by the
-- first records version 3 as applied and never ran the second: every escalation statement
-- failed on the missing cleared_time. This brings such a database to 00003's schema, a timer it
-- had cleared staying cleared, and changes nothing on one that has it.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'escalation_timers' AND column_name = 'cleared') THEN
        ALTER TABLE escalation_timers ADD COLUMN IF NOT EXISTS cleared_time timestamptz;
        UPDATE escalation_timers SET due_time = 'infinity', cleared_time = now() WHERE cleared AND cleared_time IS NULL;
        DROP INDEX IF EXISTS escalation_timers_cleared;
        DROP INDEX IF EXISTS escalation_timers_due;
        ALTER TABLE escalation_timers DROP COLUMN cleared;
        CREATE INDEX escalation_timers_due ON escalation_timers (due_time);
        CREATE INDEX escalation_timers_cleared ON escalation_timers (cleared_time) WHERE cleared_time IS NOT NULL;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
SELECT 1;
