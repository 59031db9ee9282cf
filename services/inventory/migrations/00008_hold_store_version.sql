-- The store's version a hold was placed against (Hold.store_version): fulfilment cancels, for a
-- closing that asks it to, the orders whose holds were placed before the closing's version.
-- Holds from before the column have 0: placed before any closing made after it. A constant
-- default: no table rewrite.

-- +goose Up
ALTER TABLE holds ADD COLUMN store_version bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE holds DROP COLUMN store_version;
