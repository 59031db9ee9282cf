-- A hold that expired before its order settled it (inventory out of reach past the hold's
-- deadline and grace): the order's late commit sells its goods then (the goods left the store
-- all the same), or its late release (the line dropped) leaves them; once, either way (see
-- holdEnds.addLateSales). A constant default: no table rewrite.

-- +goose Up
ALTER TABLE holds ADD COLUMN settled_late boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE holds DROP COLUMN settled_late;
