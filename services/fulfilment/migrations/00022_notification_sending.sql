-- Customer notifications (package services/fulfilment/notify): an email of an order is not
-- sent while an earlier email of the same order is still being sent.

-- +goose Up
-- Until when a dispatcher that claimed the row may still be sending it (its lease); NULL once
-- the send's outcome is recorded. A later email of the same order is not claimed meanwhile, so
-- it cannot reach the shopper before the earlier one (see notify's roundSQL).
ALTER TABLE notifications ADD COLUMN sending_until timestamptz;

-- +goose Down
ALTER TABLE notifications DROP COLUMN sending_until;
