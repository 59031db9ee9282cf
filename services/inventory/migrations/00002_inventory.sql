-- Inventory's own tables. Version 1 (outbox, processed_events) is created by internal/pgdb.

-- +goose Up
CREATE TABLE stores (
    id                    text             PRIMARY KEY,
    name                  text             NOT NULL,
    address               jsonb            NOT NULL DEFAULT '{}',
    lat                   double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lng                   double precision NOT NULL CHECK (lng BETWEEN -180 AND 180),
    time_zone             text             NOT NULL,
    -- [{"weekday":1..7,"open":"HH:MM","close":"HH:MM"}] and
    -- [{"date":"YYYY-MM-DD","closed":bool,"open":..,"close":..,"reason":..}], validated by the service.
    opening_hours         jsonb            NOT NULL DEFAULT '[]',
    hours_exceptions      jsonb            NOT NULL DEFAULT '[]',
    prep_seconds          int              NOT NULL CHECK (prep_seconds >= 0),
    pickup_window_seconds int              NOT NULL CHECK (pickup_window_seconds > 0),
    state                 text             NOT NULL CHECK (state IN ('open', 'paused', 'closed')),
    state_reason          text             NOT NULL DEFAULT '',
    version               bigint           NOT NULL DEFAULT 1,
    create_time           timestamptz      NOT NULL DEFAULT now(),
    update_time           timestamptz      NOT NULL DEFAULT now()
);
-- The locator's bounding-box prefilter: a latitude range scan that checks longitude inside
-- the index, so only stores in the box are fetched from the heap.
CREATE INDEX stores_by_location ON stores (lat, lng);

-- One row per store and SKU. The checks are the last line of defence against oversell: the
-- service decides under row locks, and a bug that would break a rule aborts its transaction.
CREATE TABLE stock (
    store_id     text        NOT NULL REFERENCES stores (id),
    sku          text        NOT NULL,
    on_hand      int         NOT NULL CHECK (on_hand >= 0),
    reserved     int         NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    safety_stock int         NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
    update_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, sku),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand)
);

-- Units of one SKU held at one store for one order line. Every hold ends exactly once: the
-- state moves from open to committed, released or expired under "WHERE state = 'open'".
CREATE TABLE holds (
    id             uuid        PRIMARY KEY,
    order_id       text        NOT NULL,
    line_id        text        NOT NULL,
    store_id       text        NOT NULL,
    sku            text        NOT NULL,
    quantity       int         NOT NULL CHECK (quantity BETWEEN 1 AND 999),
    state          text        NOT NULL CHECK (state IN ('open', 'committed', 'released', 'expired')),
    release_reason text        NOT NULL DEFAULT '',
    expire_time    timestamptz NOT NULL,
    create_time    timestamptz NOT NULL DEFAULT now(),
    end_time       timestamptz,
    -- One hold per order line, however often a reserve is retried or redelivered, by
    -- however many copies of the service.
    CONSTRAINT holds_one_per_order_line UNIQUE (order_id, line_id),
    CHECK ((state = 'open') = (end_time IS NULL))
);
-- The sweeper's queue.
CREATE INDEX holds_open_by_expiry ON holds (expire_time) WHERE state = 'open';
-- The invariant check: reserved = sum of open holds.
CREATE INDEX holds_open_by_stock ON holds (store_id, sku) WHERE state = 'open';

-- The stock ledger: every change of on hand or reserved, who made it, why, and the levels
-- after it. For every stock row, on_hand = sum(on_hand_delta) and reserved = sum(reserved_delta).
CREATE TABLE movements (
    id                 bigserial   PRIMARY KEY,
    store_id           text        NOT NULL,
    sku                text        NOT NULL,
    kind               text        NOT NULL CHECK (kind IN ('set', 'delivery', 'count', 'in_store_sale', 'return', 'damage',
                                                            'hold_placed', 'hold_released', 'hold_committed')),
    on_hand_delta      int         NOT NULL,
    reserved_delta     int         NOT NULL,
    on_hand_after      int         NOT NULL,
    reserved_after     int         NOT NULL,
    safety_stock_after int         NOT NULL,
    actor_kind         text        NOT NULL,
    actor_id           text        NOT NULL,
    note               text        NOT NULL DEFAULT '',
    order_id           text        NOT NULL DEFAULT '',
    hold_id            uuid,
    -- Admin changes only; a retry with the same key returns this row instead of applying twice.
    idempotency_key    text,
    create_time        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX movements_idempotency ON movements (store_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX movements_by_stock ON movements (store_id, sku, id);
CREATE INDEX movements_by_store ON movements (store_id, id);

-- +goose Down
DROP TABLE movements;
DROP TABLE holds;
DROP TABLE stock;
DROP TABLE stores;
