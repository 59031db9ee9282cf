-- A cart's lines live in its row, as a JSON array in the order they were added: every change
-- is then one conditional UPDATE of one row (see carts.go), with no transaction and no lock.
-- Existing lines move over with their ids and order; cart_lines goes.

-- +goose Up
ALTER TABLE carts ADD COLUMN lines jsonb NOT NULL DEFAULT '[]'
    -- The rules cart_lines' columns kept; the Go code keeps the rest (unique SKUs, 100 lines).
    CHECK (jsonb_typeof(lines) = 'array'
       AND NOT jsonb_path_exists(lines, '$[*] ? (@.quantity < 1 || @.quantity > 99)'));

UPDATE carts c SET lines = l.lines
FROM (
    SELECT cart_id, jsonb_agg(jsonb_build_object(
               'line_id', line_id, 'sku', sku, 'quantity', quantity, 'product_id', product_id,
               'product_name', product_name, 'variant_name', variant_name,
               'price_minor', price_minor, 'currency', currency) ORDER BY position) AS lines
    FROM cart_lines GROUP BY cart_id
) l
WHERE c.id = l.cart_id;

DROP TABLE cart_lines;

-- +goose Down
CREATE TABLE cart_lines (
    cart_id      text    NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    line_id      text    NOT NULL,
    sku          text    NOT NULL,
    quantity     int     NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    position     bigint  NOT NULL,
    product_id   text    NOT NULL,
    product_name text    NOT NULL,
    variant_name text    NOT NULL,
    price_minor  bigint  NOT NULL,
    currency     text    NOT NULL,
    PRIMARY KEY (cart_id, line_id),
    UNIQUE (cart_id, sku)
);

INSERT INTO cart_lines (cart_id, line_id, sku, quantity, position, product_id, product_name, variant_name, price_minor, currency)
SELECT c.id, l.line->>'line_id', l.line->>'sku', (l.line->>'quantity')::int, l.position,
       l.line->>'product_id', l.line->>'product_name', l.line->>'variant_name',
       (l.line->>'price_minor')::bigint, l.line->>'currency'
FROM carts c, jsonb_array_elements(c.lines) WITH ORDINALITY AS l(line, position);

ALTER TABLE carts DROP COLUMN lines;
