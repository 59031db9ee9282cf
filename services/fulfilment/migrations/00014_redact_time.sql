-- When an order's personal fields (pickup_name, email, customer_note, placement) were cleared:
-- by the retention sweep once the order has been ended for the retention period (90 days by
-- default), or by an erasure (ForgetCustomer, which clears customer_id too). NULL: kept. A
-- column without a default is added without rewriting the table. A database already at
-- notify's 00020 applies it out of order, as 00004.

-- +goose Up
ALTER TABLE orders ADD COLUMN redact_time timestamptz;

-- +goose Down
ALTER TABLE orders DROP COLUMN redact_time;
