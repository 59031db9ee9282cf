-- How long the oldest ticket still waiting for its store's vendor POS has waited
-- (handoff_pos_webhook_oldest_undelivered_seconds, read at every scrape) is this index's first
-- entry: a vendor refusing every ticket keeps its deliveries pending, due later and later, for
-- as long as they are retried (72 h), so that only their age shows it. Built CONCURRENTLY, as
-- 00004 says why and how.

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_pending_since;
CREATE INDEX CONCURRENTLY webhook_deliveries_pending_since ON webhook_deliveries (create_time)
    WHERE state = 'pending';
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_pending_since;
