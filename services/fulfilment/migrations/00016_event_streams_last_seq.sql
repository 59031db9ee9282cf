-- The events stream's last sequence as fulfilment last saw it (reannounce.go). A stream restored
-- from a backup keeps its creation time but goes back to the snapshot's last sequence: the
-- events published after the snapshot are lost as surely as with a stream made anew, and a
-- last sequence lower than the one seen tells so. 0: not seen yet (a stream's sequences start
-- at 1).

-- +goose Up
ALTER TABLE event_streams ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE event_streams DROP COLUMN last_seq;
