-- The ids of the last edits stored in the cart (newest first, at most 8). An edit whose write
-- committed but whose reply was lost (a connection dropped at COMMIT, a timeout as it landed)
-- finds its id here and counts as stored, instead of being decided again: adding a line again
-- would double its quantity. Not indexed, so edits stay HOT updates.

-- +goose Up
ALTER TABLE carts ADD COLUMN recent_edits uuid[] NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE carts DROP COLUMN recent_edits;
