-- Customer notifications (package services/fulfilment/notify): the due rows by channel.

-- A dispatcher's round looks at one channel at a time (notify's roundSQL). With the due rows
-- indexed by time alone, a channel whose receiver hangs (a mail server that takes connections
-- and never answers) piled up due rows that every round of every other channel walked past:
-- 150,000 due emails made a round claiming one webhook row take 390 ms. Built concurrently,
-- outside a transaction: the table takes a row with each order transition, and a plain build
-- would hold those writes back while it read the whole table. A build cut short leaves an
-- invalid index behind, so it is dropped first when there.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS notifications_due_by_channel;
CREATE INDEX CONCURRENTLY notifications_due_by_channel ON notifications (channel, next_attempt_at)
    WHERE state = 'pending';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS notifications_due_by_channel;
