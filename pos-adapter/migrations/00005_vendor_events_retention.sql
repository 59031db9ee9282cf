-- The janitor deletes vendor events past the ticket retention (they are idempotency records: a
-- vendor retries an event within minutes, its signatures are good for five), and finds them
-- by when they arrived.
--
-- Built CONCURRENTLY, outside a transaction, so vendor events go on being taken while it is
-- built; an invalid index left by a build cut short is dropped first, and it waits for older
-- transactions without a lock timeout (both as in 00004).

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS vendor_events_receive_time;
CREATE INDEX CONCURRENTLY vendor_events_receive_time ON vendor_events (receive_time);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS vendor_events_receive_time;
