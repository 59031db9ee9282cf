-- The janitor deletes vendor events past the ticket retention (they are idempotency records: a
-- vendor retries an event within minutes, its signatures are good for five), and finds them
-- by when they arrived.
--
-- Built CONCURRENTLY, outside a transaction, so vendor events go on being taken while it is
-- built; an invalid index left by a build cut short is dropped first (as in 00004).

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS vendor_events_receive_time;
CREATE INDEX CONCURRENTLY vendor_events_receive_time ON vendor_events (receive_time);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS vendor_events_receive_time;
