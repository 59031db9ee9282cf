-- Customer notifications (package services/fulfilment/notify): copies of the service with
-- different senders side by side, and emails in order.

-- +goose Up
-- The channels the dispatchers serve: every dispatcher with a sender for a channel stamps its
-- row now and then (notify's heartbeatEvery). A copy without that sender leaves the channel's
-- rows to the copies that have one, and marks them skipped only once no copy has served the
-- channel for a while (notify's servedGrace), so a rolling deploy that adds or drops a sender,
-- or a pod whose secret failed to mount, loses nothing. One row per channel, never deleted.
CREATE TABLE notification_channels (
    channel     text        PRIMARY KEY,
    served_time timestamptz NOT NULL
);
-- The order's version the notification announces, so that an email retried after a later one
-- of the same order was sent is dropped instead of arriving out of order. 0: not known (rows
-- written before this column, orders without a version).
ALTER TABLE notifications ADD COLUMN order_version bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE notifications DROP COLUMN order_version;
DROP TABLE notification_channels;
