-- The janitor deletes vendor events past the ticket retention (they are idempotency records: a
-- vendor retries an event within minutes, its signatures are good for five), and finds them
-- by when they arrived.

-- +goose Up
CREATE INDEX vendor_events_receive_time ON vendor_events (receive_time);

-- +goose Down
DROP INDEX vendor_events_receive_time;
