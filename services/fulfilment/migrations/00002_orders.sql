-- Orders, their history and the inventory effects still to carry out. Version 1 (outbox,
-- processed_events) is created by internal/pgdb; 00020+ belong to package notify.

-- +goose Up
CREATE TABLE orders (
    id                  text        PRIMARY KEY,  -- DeterministicID(customer_id, idempotency_key)
    customer_id         text        NOT NULL,
    idempotency_key     text        NOT NULL,
    cart_id             text        NOT NULL DEFAULT '',
    state               smallint    NOT NULL,     -- handoff.fulfilment.v1.OrderState
    store_id            text        NOT NULL DEFAULT '',
    store_name          text        NOT NULL DEFAULT '',
    lines               jsonb       NOT NULL,     -- [{id, sku, product, variant, qty, unit, unavailable, reason}]
    currency            text        NOT NULL,
    customer_note       text        NOT NULL DEFAULT '',
    pickup_name         text        NOT NULL DEFAULT '',
    email               text        NOT NULL DEFAULT '',
    shortages           jsonb,                    -- REJECTED: [{sku, requested, available}]
    reason              text        NOT NULL DEFAULT '',
    ready_by            timestamptz,
    pickup_window_ms    bigint      NOT NULL DEFAULT 0,  -- the store's, at confirmation
    pickup_deadline     timestamptz,              -- READY: expires then
    expiring_soon_at    timestamptz,              -- READY: reminder, cleared once sent
    not_accepted_at     timestamptz,              -- CONFIRMED: escalation, cleared once sent
    -- Deadline of the order's holds at inventory, as fulfilment has asked for it (an extend
    -- effect may still be on its way); extended again before it comes near while the order is open.
    hold_deadline       timestamptz,
    -- When the timer loop (open orders) or the recovery loop (PENDING) must look at the order
    -- next: the earliest of the timers above that matter in its state, and of hold_deadline
    -- less the refresh margin.
    timer_at            timestamptz,
    check_in_time       timestamptz,
    check_in_bay        text        NOT NULL DEFAULT '',
    wrong_codes         int         NOT NULL DEFAULT 0,
    pickup_locked_until timestamptz,
    placement           bytea,                    -- PENDING: the PlaceOrderRequest, to drive it on
    version             bigint      NOT NULL,     -- = number of history entries
    create_time         timestamptz NOT NULL,
    update_time         timestamptz NOT NULL,
    -- One order per idempotency key, however often the checkout is retried (the id is derived
    -- from the same pair, so the primary key says it too; this says it in the schema's words).
    CONSTRAINT orders_one_per_key UNIQUE (customer_id, idempotency_key)
);
-- The shopper's list, newest first.
CREATE INDEX orders_by_customer ON orders (customer_id, create_time DESC, id DESC);
-- The store's board, oldest first.
CREATE INDEX orders_by_store ON orders (store_id, create_time, id) WHERE store_id <> '';
-- The store's queue (ready-by estimate).
CREATE INDEX orders_queue ON orders (store_id) WHERE state IN (2, 3);
-- Timer and recovery loops.
CREATE INDEX orders_timer ON orders (timer_at) WHERE timer_at IS NOT NULL;

-- Every transition and notable event of an order (who, when, why). seq is the order's version
-- after the entry, and names its event: DeterministicID("order", order_id, seq).
CREATE TABLE order_history (
    order_id   text        NOT NULL,
    seq        bigint      NOT NULL,
    from_state smallint    NOT NULL,
    to_state   smallint    NOT NULL,
    event      text        NOT NULL,
    actor_kind smallint    NOT NULL,
    actor_id   text        NOT NULL,
    reason     text        NOT NULL DEFAULT '',
    line_id    text        NOT NULL DEFAULT '',
    time       timestamptz NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- Inventory effects of committed changes (release, commit, extend), written in the change's
-- transaction and deleted once inventory has done them: a crash between the two leaves the row,
-- and the effects worker carries it out later. Effects of one order run in id order.
CREATE TABLE order_effects (
    id          bigserial   PRIMARY KEY,
    order_id    text        NOT NULL,
    kind        smallint    NOT NULL,  -- domain.Effect
    line_id     text        NOT NULL DEFAULT '',
    reason      smallint    NOT NULL DEFAULT 0,  -- handoff.inventory.v1.ReleaseReason
    deadline    timestamptz,                     -- extend: the holds' new deadline
    attempts    int         NOT NULL DEFAULT 0,
    due         timestamptz NOT NULL DEFAULT now(),
    last_error  text        NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_effects_by_order ON order_effects (order_id, id);

-- +goose Down
DROP TABLE order_effects;
DROP TABLE order_history;
DROP TABLE orders;
