-- A row's last count so far is its last SET (an operator's count, the initial load) or COUNT
-- correction. Outside a transaction of the migration's own: the ledger is read once, without
-- blocking its writers, and each stock row is locked only by the one statement that fills it
-- in, so reserves go on while it runs. Rows changed meanwhile by copies of the old build keep
-- no count time (README, Upgrading).

-- +goose NO TRANSACTION
-- +goose Up
UPDATE stock st SET count_time = m.last
FROM (SELECT store_id, sku, max(create_time) AS last FROM movements WHERE kind IN ('set', 'count') GROUP BY store_id, sku) m
WHERE st.store_id = m.store_id AND st.sku = m.sku AND st.count_time IS NULL;

-- +goose Down
SELECT 1;
