-- A store's signing secret replaced with a grace (SetStoreWebhook's previous_secret_ttl): the
-- secret it replaced stays valid until previous_secret_expire_time, for vendor events signed
-- with it and beside the new one on deliveries, so that a vendor switches without a gap.

-- +goose Up
ALTER TABLE store_webhooks ADD COLUMN previous_secret text, ADD COLUMN previous_secret_expire_time timestamptz;

-- +goose Down
ALTER TABLE store_webhooks DROP COLUMN previous_secret, DROP COLUMN previous_secret_expire_time;
