-- The closings with cancellation fulfilment has taken on (StoreStateChanged with
-- cancel_open_orders), one row per closing, kept while the timer loop watches the store for
-- orders confirmed late (their reserve raced the closing): closed_at is the closing's time on
-- inventory's clock, handled_at when fulfilment took it on. A database already at notify's 00020
-- applies it out of order, as 00004.

-- +goose Up
CREATE TABLE store_closings (
    store_id text NOT NULL,
    closed_at timestamptz NOT NULL,
    reason text NOT NULL,
    actor_kind smallint NOT NULL,
    actor_id text NOT NULL,
    handled_at timestamptz NOT NULL,
    PRIMARY KEY (store_id, closed_at)
);

-- +goose Down
DROP TABLE store_closings;
