-- Customer notifications (package services/fulfilment/notify): the due rows by channel.

-- A dispatcher's round looks at one channel at a time (notify's roundSQL). With the due rows
-- indexed by time alone, a channel whose receiver hangs (a mail server that takes connections
-- and never answers) piled up due rows that every round of every other channel walked past:
-- 150,000 due emails made a round claiming one webhook row take 390 ms.
--
-- Built CONCURRENTLY, outside a transaction: the table takes rows with order transitions, and a
-- plain build would hold those back while it read the whole table. A build cut short leaves an
-- invalid index of the name behind; it is dropped first, so trying again builds it afresh. A
-- concurrent build waits for every transaction older than it in the whole database, holding up
-- no one meanwhile, so it waits without pgdb.MigrationLockTimeout (the pos-adapter's 00004 says
-- more).

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS notifications_due_by_channel;
CREATE INDEX CONCURRENTLY notifications_due_by_channel ON notifications (channel, next_attempt_at)
    WHERE state = 'pending';
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS notifications_due_by_channel;
