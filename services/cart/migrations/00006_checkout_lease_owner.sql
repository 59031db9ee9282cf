-- checkout_joins counts the requests that joined a running checkout lease with its key (a
-- retry, a double tap) after the request that started it: the one that started it ends the
-- lease early on a failure only while nobody joined, since a joined request may be placing
-- the order that very moment. checkout_time is when the last checkout lease started: a
-- checkout is activity, so the abandoned-cart sweep leaves a cart alone for as long after it
-- as after an edit. Neither is indexed, so the writes stay HOT updates.

-- +goose Up
ALTER TABLE carts ADD COLUMN checkout_joins integer NOT NULL DEFAULT 0,
                  ADD COLUMN checkout_time timestamptz;

-- +goose Down
ALTER TABLE carts DROP COLUMN checkout_joins, DROP COLUMN checkout_time;
