-- The stores inventory closed asking for their open orders to be cancelled (StoreStateChanged
-- with cancel_open_orders), as fulfilment last heard of each store's state: one row per store
-- whose state event it has handled, so that a late or redelivered older event (version) is
-- dropped. cancel_at is when fulfilment took the request on: for a while after it the timer loop
-- cancels orders confirmed at the store late (their reserve raced the closing). A database
-- already at notify's 00020 applies it out of order, as 00004.

-- +goose Up
CREATE TABLE store_closures (
    store_id text PRIMARY KEY,
    version bigint NOT NULL DEFAULT -1,
    closed boolean NOT NULL DEFAULT false,
    cancel_orders boolean NOT NULL DEFAULT false,
    cancel_reason text NOT NULL DEFAULT '',
    cancel_actor_kind smallint NOT NULL DEFAULT 0,
    cancel_actor_id text NOT NULL DEFAULT '',
    cancel_at timestamptz
);

-- +goose Down
DROP TABLE store_closures;
