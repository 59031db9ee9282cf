-- What the stock row's last count could not take off: units it found missing that open orders
-- had reserved, so on hand was left at the reserved units (a count with clamp_to_reserved).
-- An order handed over before the count but committed after it takes its goods off from these
-- (holdEnds.add): the count did not find them, and took off the rest already. A constant
-- default: no table rewrite.

-- +goose Up
ALTER TABLE stock ADD COLUMN count_short integer NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE stock DROP COLUMN count_short;
