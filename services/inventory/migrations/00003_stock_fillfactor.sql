-- Stock rows are updated on every reserve, release and sale, a hot SKU's row hundreds of times
-- a second. Leaving a tenth of each page free lets Postgres keep a row's new version on its
-- page (a HOT update: no new index entry, the old version pruned in place) instead of moving
-- it and growing the primary key with dead entries every lookup must step over. Applies to
-- pages written from now on.

-- +goose Up
ALTER TABLE stock SET (fillfactor = 90);

-- +goose Down
ALTER TABLE stock RESET (fillfactor);
