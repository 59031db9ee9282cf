-- Changes reported after the fact (a vendor POS's till sales and counts) can arrive out of the
-- order they happened in. A movement records when its change happened, when the request said;
-- a stock row records when its last count was taken, so a sale from before it (already in the
-- count) is not taken off again, and a count taken before sales already recorded keeps them.

-- +goose Up
ALTER TABLE stock ADD COLUMN count_time timestamptz;
ALTER TABLE movements ADD COLUMN occur_time timestamptz;

-- +goose Down
ALTER TABLE movements DROP COLUMN occur_time;
ALTER TABLE stock DROP COLUMN count_time;
