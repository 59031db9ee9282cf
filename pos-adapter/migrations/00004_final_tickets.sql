-- +goose Up

-- An order's cancelled or expired ticket ends its feed: a ticket of the order raised after it
-- (its confirmed event handled late, by a second copy or after a retried batch) would put an
-- order that is over back on the store's board. raiseTicketsSQL looks for the ending ticket by
-- order; only those tickets are indexed, a few per hundred orders.
CREATE INDEX tickets_final_by_order ON tickets (order_id) WHERE kind IN ('order_cancelled', 'order_expired');

-- +goose Down
DROP INDEX tickets_final_by_order;
