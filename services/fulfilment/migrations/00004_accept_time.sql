-- When staff accepted the order (CONFIRMED → PREPARING). An order accepted late gets the time to
-- be made ready from then, not from its first estimate (domain.AbandonAt). A database already
-- at notify's 00020 applies it out of order (pgdb.Migrate allows that: the two ranges touch
-- different tables).

-- +goose Up
ALTER TABLE orders ADD COLUMN accept_time timestamptz;

-- +goose Down
ALTER TABLE orders DROP COLUMN accept_time;
