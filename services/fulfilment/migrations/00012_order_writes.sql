-- Every write of an order row counts itself (orders.writes, one more each time), and a write
-- is made only over the row it was decided on: updateOrder's statement updates the row where
-- writes is still what was read with it, and otherwise fails through order_written_meanwhile
-- with SQLSTATE 40001 (serialization_failure) naming the order, which fails the transaction or
-- write batch it is in, so nothing of that change is written. Row locks keep writers apart
-- today (a change locks its orders, the timer loop skips locked ones); this makes a stale
-- copy's write (a lock ever dropped) an error instead of a silent overwrite of a newer change.
-- The order's version is no such guard: it moves only with transitions, not with check-ins,
-- wrong codes, timers or hold deadlines.
--
-- Existing rows start at 0. A column with a constant default is added without rewriting the
-- table (PostgreSQL 11 and later): a moment's lock on orders. Old copies do not bump it (see
-- README, Upgrading).

-- +goose Up
ALTER TABLE orders ADD COLUMN writes bigint NOT NULL DEFAULT 0;

-- +goose StatementBegin
CREATE FUNCTION order_written_meanwhile(order_id text, read_writes bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order % was written by another transaction since it was read (with writes = %), or is gone: not overwritten', order_id, read_writes
        USING ERRCODE = 'serialization_failure',
              HINT = 'read the order again and decide the change afresh';
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION order_written_meanwhile(text, bigint);
ALTER TABLE orders DROP COLUMN writes;
