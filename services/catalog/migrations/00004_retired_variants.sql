-- A variant an update leaves out is retired, not deleted: its SKU still resolves (orderable no
-- more) for the carts and orders that hold it, and stays its product's. Deleted, the SKU was
-- free for another product, and a cart line holding it became that product at its price. A
-- column with a constant default: no table rewrite, and copies of the old build, which neither
-- write nor read it, keep working (they still delete what they leave out).

-- +goose Up
ALTER TABLE variants ADD COLUMN retired boolean NOT NULL DEFAULT false;

-- +goose Down
DELETE FROM variants WHERE retired;
ALTER TABLE variants DROP COLUMN retired;
