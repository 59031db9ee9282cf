-- The ended orders whose personal fields are still kept, by age, for the retention sweep
-- (redact.go): an order leaves the index when it is redacted, so a sweep reads the orders it
-- clears, not the years of orders cleared before. On create_time, which never changes: an
-- order ended before the cutoff was created before it, and the sweep checks update_time (the
-- end) on the few rows it reads; an index on update_time would make every write of an open
-- order update it. Built CONCURRENTLY, as 00023 says why and how.

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS orders_to_redact;
CREATE INDEX CONCURRENTLY orders_to_redact ON orders (create_time)
    WHERE redact_time IS NULL AND state IN (5, 6, 7, 8);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS orders_to_redact;
