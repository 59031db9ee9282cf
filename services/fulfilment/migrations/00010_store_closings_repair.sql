-- 00008 was rewritten in place on 2026-11-25 (49a6f86 created store_closures, 9818cb6
-- store_closings keyed by closed_at, f8af9ed the schema below). A database migrated by one of
-- the first two records version 8 as applied and never ran the last: no orders.store_version,
-- and no store_closings keyed by version, which every order query and the closings loop use.
-- This brings such a database to 00008's schema and changes nothing on one that has it. A
-- closing kept by those builds (a day's watch at most) is dropped: its version is not known.

-- Each step looks first, so a database that has the schema takes no lock on orders.

-- +goose Up
DROP TABLE IF EXISTS store_closures;

-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'orders' AND column_name = 'store_version') THEN
        ALTER TABLE orders ADD COLUMN store_version bigint NOT NULL DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'store_closings' AND column_name = 'version') THEN
        DROP TABLE IF EXISTS store_closings;
        CREATE TABLE store_closings (
            store_id text NOT NULL,
            version bigint NOT NULL,
            reason text NOT NULL,
            actor_kind smallint NOT NULL,
            actor_id text NOT NULL,
            handled_at timestamptz NOT NULL,
            PRIMARY KEY (store_id, version)
        );
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
SELECT 1;
