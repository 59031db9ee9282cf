-- Every shopper action rewrites its cart's row. With no index on a column those writes change
-- (update_time, version, lines, the pickup, the lease), Postgres updates the row in place on its
-- page (a HOT update) and touches no index at all; fillfactor leaves the room on the page for it.
-- The abandonment sweep narrows by create_time instead of update_time: a cart unchanged for the
-- abandonment period was created before it. The per-customer index had no reader.

-- +goose Up
DROP INDEX carts_by_customer;
DROP INDEX carts_abandoned;
CREATE INDEX carts_abandoned ON carts (create_time) WHERE state = 'open';
ALTER TABLE carts SET (fillfactor = 80);

-- +goose Down
ALTER TABLE carts RESET (fillfactor);
DROP INDEX carts_abandoned;
CREATE INDEX carts_abandoned ON carts (update_time) WHERE state = 'open';
CREATE INDEX carts_by_customer ON carts (customer_id, update_time DESC);
