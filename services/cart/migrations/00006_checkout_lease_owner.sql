-- checkout_joins counts the requests inside a running checkout lease with its key (the one
-- that started it, and retries or double taps that joined it): one that fails without an order
-- leaves, and the last to leave opens the cart early, since any other may be placing the
-- order that very moment. checkout_time is when the last checkout lease started: a
-- checkout is activity, so the abandoned-cart sweep leaves a cart alone for as long after it
-- as after an edit. Neither is indexed, so the writes stay HOT updates.

-- +goose Up
ALTER TABLE carts ADD COLUMN checkout_joins integer NOT NULL DEFAULT 0,
                  ADD COLUMN checkout_time timestamptz;

-- +goose Down
ALTER TABLE carts DROP COLUMN checkout_joins, DROP COLUMN checkout_time;
