-- A store's vendor POS endpoint backs off as a whole, not only each delivery on its own: an
-- endpoint that never answers holds a send slot for the whole send timeout per attempt, and
-- with deliveries retried for the replay window, one such store with many tickets pending
-- would keep every slot busy and delay every other store's deliveries. retry_time is set
-- (NULL while the endpoint answers) when an attempt fails: until then none of the store's
-- deliveries is due, and then one of them tries the endpoint again (failures, the failed
-- tries in a row, doubles the wait). The dispatcher finds a store's pending deliveries by
-- webhook_deliveries_pending_by_store, and stores whose wait is over by store_webhooks_retry.
--
-- The columns come first, under the migration's lock timeout (adding a column with a constant
-- default rewrites nothing). The indexes are built CONCURRENTLY, outside a transaction, so
-- deliveries go on being queued and made while they are built; an invalid index left by a
-- build cut short is dropped first, and the build waits for older transactions without a
-- lock timeout (both as in 00004).

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE store_webhooks ADD COLUMN IF NOT EXISTS retry_time timestamptz,
	ADD COLUMN IF NOT EXISTS failures int NOT NULL DEFAULT 0;
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_pending_by_store;
CREATE INDEX CONCURRENTLY webhook_deliveries_pending_by_store ON webhook_deliveries (store_id, next_attempt_time) WHERE state = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS store_webhooks_retry;
CREATE INDEX CONCURRENTLY store_webhooks_retry ON store_webhooks (retry_time) WHERE retry_time IS NOT NULL;
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS store_webhooks_retry;
DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_pending_by_store;
ALTER TABLE store_webhooks DROP COLUMN IF EXISTS failures, DROP COLUMN IF EXISTS retry_time;
