-- Products' search text is composed (NFC) by the service since this version (searchForm), as
-- every query is, so that an accent typed as a combining mark finds the word written with the
-- accented letter. Rows written before are composed here once; normalize() needs a UTF-8
-- database, and in any other a product's text holds no combining marks to compose.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF current_setting('server_encoding') = 'UTF8' THEN
        UPDATE products SET search_text = normalize(search_text, NFC) WHERE search_text IS NOT NFC NORMALIZED;
    END IF;
END $$;
-- +goose StatementEnd

-- +goose Down
SELECT 1;
