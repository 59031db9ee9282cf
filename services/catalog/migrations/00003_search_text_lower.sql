-- Products' search text is lower-cased by the service since this version (searchText), so that
-- a database whose ctype is C, where Postgres lower-cases ASCII only (the one-process mode's
-- own cluster), still finds "Éclair" by "éclair". Rows written before are lower-cased here
-- once, with a UTF-8 libc collation where the server has one (its per-character mapping is
-- Go's), else the database's own; the generated search column follows.

-- +goose Up
-- +goose StatementBegin
DO $$
DECLARE
    coll text;
BEGIN
    SELECT quote_ident(collname) INTO coll FROM pg_collation
    WHERE collprovider = 'c' AND collname IN ('C.utf8', 'C.UTF-8', 'en_US.utf8', 'en_US.UTF-8')
        AND collencoding IN (-1, (SELECT encoding FROM pg_database WHERE datname = current_database()))
    ORDER BY collname LIMIT 1;
    EXECUTE format('UPDATE products SET search_text = lower(search_text COLLATE %1$s) WHERE search_text <> lower(search_text COLLATE %1$s)',
        coalesce(coll, '"default"'));
END $$;
-- +goose StatementEnd

-- +goose Down
SELECT 1; -- lower-cased text searches as before
