-- The orders of shoppers fulfilment has erased (CustomerForgotten, forget.go), kept for as long
-- as an event of theirs published before the erasure could still raise a ticket (the replay
-- window; the janitor deletes older rows): the order events and the erasure reach the adapter
-- through separate consumers, so such an event may be read after the erasure, and its ticket
-- and escalation timer are then written without the shopper's personal fields.

-- +goose Up
CREATE TABLE forgotten_orders (
  order_id    text        PRIMARY KEY,
  forget_time timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE forgotten_orders;
