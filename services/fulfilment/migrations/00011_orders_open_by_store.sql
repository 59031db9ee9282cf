-- The store's board (ListStoreOrders, by default its open orders: CONFIRMED, PREPARING, READY),
-- oldest first. Through orders_by_store a board read every order the store ever had and threw
-- the ended ones away: a year of a store's 100 orders a day made each board 120 ms and 37,000
-- pages, and a terminal loads its board at every reconnect. The ended orders stay out of this
-- index, so a board reads about as many rows as it shows. Built CONCURRENTLY, as 00023 says why
-- and how.

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS orders_open_by_store;
CREATE INDEX CONCURRENTLY orders_open_by_store ON orders (store_id, create_time, id)
    WHERE state IN (2, 3, 4);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS orders_open_by_store;
