-- When an order not yet READY expires (domain.AbandonAt), written at confirmation and at
-- acceptance: the end of the pickup window it would have had counts the store's open hours,
-- which are not at hand when the order is read. NULL (orders from before the column, and those
-- a process from before it confirmed) falls back to the plain-time rule from ready_by,
-- accept_time and pickup_window_ms, which is also the least any order gets (see scanOrder). A
-- database already at notify's 00020 applies it out of order, as 00004.

-- +goose Up
ALTER TABLE orders ADD COLUMN abandon_at timestamptz;

-- +goose Down
ALTER TABLE orders DROP COLUMN abandon_at;
