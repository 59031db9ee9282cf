-- An order's cancelled or expired ticket ends its feed: a ticket of the order raised after it
-- (its confirmed event handled late, by a second copy or after a retried batch) would put an
-- order that is over back on the store's board. raiseTicketsSQL looks for the ending ticket by
-- order; only those tickets are indexed, a few per hundred orders.
--
-- Built CONCURRENTLY, outside a transaction, so tickets go on being raised while it is built.
-- A build cut short (a stop, a failure) leaves an invalid index of the name behind; it is
-- dropped first, so trying again builds it afresh. A concurrent build waits for every
-- transaction older than it in the whole database (a report, a backup's snapshot), holding up
-- no one meanwhile, so it waits without pgdb.MigrationLockTimeout: under it, any transaction
-- open for two seconds anywhere would fail every try. The migration's statements run on one
-- connection (pgdb.Migrate), which RESET gives its bound back.

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS tickets_final_by_order;
CREATE INDEX CONCURRENTLY tickets_final_by_order ON tickets (order_id) WHERE kind IN ('order_cancelled', 'order_expired');
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS tickets_final_by_order;
