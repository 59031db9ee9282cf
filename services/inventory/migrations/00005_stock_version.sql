-- A stock row's version goes up by one with every transaction that changes it, under the row's
-- lock, so the levels a reader sees and the events it receives can be put in order. Their
-- update_time cannot do that: it is when the writing transaction began, not when it took the
-- lock. A movement records the version its transaction left the row at.

-- +goose Up
ALTER TABLE stock ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE movements ADD COLUMN stock_version bigint;

-- +goose Down
ALTER TABLE movements DROP COLUMN stock_version;
ALTER TABLE stock DROP COLUMN version;
