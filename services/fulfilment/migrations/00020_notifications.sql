-- Customer notifications (package services/fulfilment/notify). Version 1 (outbox,
-- processed_events) is created by internal/pgdb; 00002-00019 are the orders' own tables.

-- +goose Up
-- The notification outbox: one row per notification and channel, written by notify.Enqueue in
-- the same transaction as the order transition it announces, delivered by notify.Dispatcher.
-- No foreign key to orders: notifications are a log that outlives nothing and blocks nothing.
CREATE TABLE notifications (
    id              uuid        PRIMARY KEY,
    order_id        text        NOT NULL,
    kind            text        NOT NULL,                       -- e.g. order.ready
    channel         text        NOT NULL,                       -- webhook | email
    recipient       text        NOT NULL DEFAULT '',            -- email address, for email
    order_snapshot  bytea       NOT NULL,                       -- handoff.fulfilment.v1.Order, protobuf
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'dead', 'skipped')),
    attempts        int         NOT NULL DEFAULT 0,
    -- When a pending row is next due. Claiming a row moves it one lease ahead, so a dispatcher
    -- that dies mid-send leaves the row due again once the lease has passed.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text        NOT NULL DEFAULT '',
    replays         int         NOT NULL DEFAULT 0,
    create_time     timestamptz NOT NULL DEFAULT now(),
    sent_time       timestamptz,
    fail_time       timestamptz
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_dead ON notifications (fail_time DESC, id DESC) WHERE state = 'dead';
CREATE INDEX notifications_sent ON notifications (sent_time) WHERE state IN ('sent', 'skipped');
CREATE INDEX notifications_by_order ON notifications (order_id);

-- +goose Down
DROP TABLE notifications;
