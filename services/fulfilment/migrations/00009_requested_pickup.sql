-- The pickup a checkout asked for (its store, or a point and radius), so that its key reused
-- after the cart's pickup changed is refused, as after its lines changed, instead of answered
-- with the order of the pickup asked before (a rejection at the old store, say). '' for orders
-- from before the column: only their lines are compared. A database already at notify's 00020
-- applies it out of order, as 00004.

-- +goose Up
ALTER TABLE orders ADD COLUMN requested_pickup text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE orders DROP COLUMN requested_pickup;
