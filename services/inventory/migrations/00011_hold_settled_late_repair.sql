-- 00009 was replaced on 2026-11-25: 98e663c's 00009_hold_sold_late.sql added holds.sold_late,
-- 412c8e9's 00009_hold_settled_late.sql holds.settled_late under the same version. A database
-- migrated by the first never ran the second, and every late commit or release failed on the
-- missing column. This adds it there, carrying sold_late over, and changes nothing elsewhere.

-- It looks first, so a database that has the column takes no lock on holds.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'holds' AND column_name = 'sold_late') THEN
        ALTER TABLE holds ADD COLUMN IF NOT EXISTS settled_late boolean NOT NULL DEFAULT false;
        UPDATE holds SET settled_late = true WHERE sold_late;
        ALTER TABLE holds DROP COLUMN sold_late;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
SELECT 1;
