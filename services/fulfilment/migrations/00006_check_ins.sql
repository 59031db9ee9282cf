-- How many times the shopper has checked in (the first check-in and every change of bay): each
-- one tells every terminal of the store, so fulfilment caps them (maxCheckIns). Orders checked
-- in before the column count from 0 and may each make that many more.

-- +goose Up
ALTER TABLE orders ADD COLUMN check_ins smallint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE orders DROP COLUMN check_ins;
