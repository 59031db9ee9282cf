-- The order's store's time zone, kept with the store's name when the order gets its store: the
-- shopper's emails and the order's history give times on the store's clock, not UTC.

-- +goose Up
ALTER TABLE orders ADD COLUMN store_time_zone text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE orders DROP COLUMN store_time_zone;
