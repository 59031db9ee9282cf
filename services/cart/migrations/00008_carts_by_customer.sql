-- A shopper's carts, for an erasure (fulfilment's ForgetCustomer, heard as its
-- CustomerForgotten event: forget.go), which deletes them. customer_id never changes, so a
-- cart's edits stay HOT updates. With the id in it, a
-- statement naming both a cart and its customer that the planner runs through it finds the
-- one cart, not all of a shopper's (a kiosk account may have thousands). Built CONCURRENTLY, as fulfilment's 00023 says why and how.

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS carts_by_customer;
CREATE INDEX CONCURRENTLY carts_by_customer ON carts (customer_id, id);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS carts_by_customer;
