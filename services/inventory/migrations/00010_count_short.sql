-- What the stock row's last count could not take off: units it found missing that open orders
-- had reserved, so on hand was left at the reserved units (a count with clamp_to_reserved).
-- An order handed over before the count but committed after it takes its goods off from these
-- (holdEnds.afterCount): the count did not find them, and took off the rest already.
--
-- Rows already there get NULL: what their last count left is not known (the count before this
-- column did not keep it), and a commit then takes its goods off in full, as before. New rows
-- and counts from now on keep a number. Neither step rewrites the table.

-- +goose Up
ALTER TABLE stock ADD COLUMN count_short integer;
ALTER TABLE stock ALTER COLUMN count_short SET DEFAULT 0;

-- +goose Down
ALTER TABLE stock DROP COLUMN count_short;
