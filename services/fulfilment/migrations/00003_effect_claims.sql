-- +goose Up
-- claims: how many times the effects worker has taken the effect; a commit that ended fewer
-- holds than it should is certainly short only on its first claim (a later one may follow an
-- attempt that did commit them). want_holds: a commit's count of the order's active lines
-- when it was recorded (NULL: not checked).
ALTER TABLE order_effects ADD COLUMN claims int NOT NULL DEFAULT 0, ADD COLUMN want_holds int;

-- +goose Down
ALTER TABLE order_effects DROP COLUMN want_holds, DROP COLUMN claims;
