-- The catalog's own tables. Version 1 (outbox, processed_events) is created by internal/pgdb.

-- +goose Up
CREATE TABLE categories (
    id        text PRIMARY KEY,
    slug      text NOT NULL UNIQUE,
    name      text NOT NULL,
    parent_id text REFERENCES categories (id),
    position  int  NOT NULL DEFAULT 0
);

CREATE TABLE products (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    category_id text        NOT NULL REFERENCES categories (id),
    images      jsonb       NOT NULL DEFAULT '[]',
    tags        text[]      NOT NULL DEFAULT '{}',
    archived    boolean     NOT NULL DEFAULT false,
    version     bigint      NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    -- search_text is written by the service (name, description, tags); the tsvector is derived
    -- here because to_tsvector with an explicit configuration is immutable.
    search_text text        NOT NULL DEFAULT '',
    search      tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_text)) STORED
);
CREATE INDEX products_by_name ON products (name, id) WHERE NOT archived;
CREATE INDEX products_by_category ON products (category_id, name, id);
CREATE INDEX products_search ON products USING gin (search);

CREATE TABLE variants (
    sku         text    PRIMARY KEY,
    product_id  text    NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    name        text    NOT NULL,
    price_minor bigint  NOT NULL CHECK (price_minor >= 0),
    currency    text    NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    available   boolean NOT NULL DEFAULT true,
    position    int     NOT NULL
);
CREATE INDEX variants_by_product ON variants (product_id, position);

-- +goose Down
DROP TABLE variants;
DROP TABLE products;
DROP TABLE categories;
