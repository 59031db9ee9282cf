-- The creation time of each JetStream stream fulfilment's events go to, as fulfilment last
-- announced its open orders to it (reannounce.go). A stream made anew since (deleted by an
-- operator, or its server back without its store) has lost the events it held that consumers
-- had not read yet, after the relay had deleted them here: fulfilment then announces each open
-- order's current event again, with its original id, and only then records the new time.

-- +goose Up
CREATE TABLE event_streams (
    stream  text        PRIMARY KEY,
    created timestamptz NOT NULL
);

-- +goose Down
DROP TABLE event_streams;
