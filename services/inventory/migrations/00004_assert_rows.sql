-- A pipelined write whose transaction's COMMIT is in the same round trip cannot have its row
-- count checked by the service after reading the results: by then the server has committed.
-- The service wraps such a write as
--   WITH w AS (<write> RETURNING 1) SELECT inventory_assert_rows(count(*), $n, $what) FROM w
-- so a count other than the expected one raises here, inside the transaction, and the COMMIT
-- queued behind it never runs (the transaction is rolled back).

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION inventory_assert_rows(got bigint, want bigint, what text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF got IS DISTINCT FROM want THEN
        RAISE EXCEPTION 'inventory: % changed % rows, want %; transaction rolled back', what, got, want
            USING HINT = 'a row the transaction locked and decided on was not written: a bug, nothing was committed';
    END IF;
    RETURN got;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION inventory_assert_rows(bigint, bigint, text);
