-- Changes reported after the fact (a vendor POS's till sales and counts) can arrive out of the
-- order they happened in. A movement records when its change happened, when the request said,
-- and what the request asked when that is not what was done (a sale shortened to what was
-- reserved, a count made against changes recorded since); a stock row records when its last
-- count was taken, so a sale from before it (already in the count) is not taken off again, and
-- a count taken before sales already recorded keeps them. Columns only, without defaults: a
-- change of the catalog, quick whatever the tables hold (00007 fills count_time in).

-- +goose Up
ALTER TABLE stock ADD COLUMN count_time timestamptz;
ALTER TABLE movements ADD COLUMN occur_time timestamptz;
ALTER TABLE movements ADD COLUMN requested int;

-- +goose Down
ALTER TABLE movements DROP COLUMN requested;
ALTER TABLE movements DROP COLUMN occur_time;
ALTER TABLE stock DROP COLUMN count_time;
