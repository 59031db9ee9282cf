-- A hold that expired before its order's hand-over reached inventory (inventory unreachable
-- past the hold's deadline and grace): the goods left the store all the same, so the commit
-- that comes late sells them then, once (see holdEnds.addLateSales). A constant default: no
-- table rewrite.

-- +goose Up
ALTER TABLE holds ADD COLUMN sold_late boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE holds DROP COLUMN sold_late;
