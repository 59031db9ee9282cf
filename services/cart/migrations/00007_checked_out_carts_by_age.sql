-- The checked-out carts by age, which the cart's hourly sweep deletes once they are older than
-- its retention (30 days by default): kept for ever, they were one row per order. On create_time,
-- a column that never changes, and with state already in carts_abandoned's predicate, the index
-- keeps a cart's edits HOT. Built CONCURRENTLY, as fulfilment's 00023 says why and how.

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS carts_checked_out;
CREATE INDEX CONCURRENTLY carts_checked_out ON carts (create_time) WHERE state = 'checked_out';
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS carts_checked_out;
