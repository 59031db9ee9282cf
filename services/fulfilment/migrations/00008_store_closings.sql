-- Closing a store with its open orders cancelled (closings.go). orders.store_version is the
-- store's version an order's holds were placed against (Hold.store_version; 0 for orders from
-- before the column, placed before any closing made after it): a closing covers the orders
-- below its version. store_closings keeps each closing fulfilment has taken on for the day its
-- closings loop watches the store for orders confirmed late (their reserve raced the closing, or
-- their checkout was retried after it). A database already at notify's 00020 applies it out of order,
-- as 00004.

-- +goose Up
ALTER TABLE orders ADD COLUMN store_version bigint NOT NULL DEFAULT 0;

CREATE TABLE store_closings (
    store_id text NOT NULL,
    version bigint NOT NULL,
    reason text NOT NULL,
    actor_kind smallint NOT NULL,
    actor_id text NOT NULL,
    handled_at timestamptz NOT NULL,
    PRIMARY KEY (store_id, version)
);

-- +goose Down
DROP TABLE store_closings;
ALTER TABLE orders DROP COLUMN store_version;
