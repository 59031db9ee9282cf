-- The cart's own tables. Version 1 (outbox, processed_events) is created by internal/pgdb.

-- +goose Up
CREATE TABLE carts (
    id               text        PRIMARY KEY,
    customer_id      text        NOT NULL,
    state            text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'checked_out')),
    -- Pickup: a named store, or the nearest store around a point (chosen at checkout), or none.
    pickup_store_id  text,
    near_lat         double precision,
    near_lng         double precision,
    near_radius_m    double precision,
    -- Increments on every change; writes with a stale expected version are refused.
    version          bigint      NOT NULL DEFAULT 1,
    -- Checkout: the key of the latest attempt, a lease that freezes the cart while the order
    -- is being placed, and the order once one exists.
    checkout_key     text,
    checkout_until   timestamptz,
    order_id         text,
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    CHECK (pickup_store_id IS NULL OR near_lat IS NULL),
    CHECK ((near_lat IS NULL) = (near_lng IS NULL)),
    CHECK ((state = 'checked_out') = (order_id IS NOT NULL))
);
CREATE INDEX carts_by_customer ON carts (customer_id, update_time DESC);
CREATE INDEX carts_abandoned ON carts (update_time) WHERE state = 'open';

CREATE TABLE cart_lines (
    cart_id      text    NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    line_id      text    NOT NULL,
    sku          text    NOT NULL,
    quantity     int     NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    position     bigint  NOT NULL,    -- order of adding
    -- The catalog's answer when the line was last priced, shown when the catalog cannot be
    -- asked (or no longer knows the SKU); every read asks it again.
    product_id   text    NOT NULL,
    product_name text    NOT NULL,
    variant_name text    NOT NULL,
    price_minor  bigint  NOT NULL,
    currency     text    NOT NULL,
    PRIMARY KEY (cart_id, line_id),
    UNIQUE (cart_id, sku)
);

-- +goose Down
DROP TABLE cart_lines;
DROP TABLE carts;
