-- ListTerminals pages through the chain's terminals by (create_time, id): an index in that
-- order reads a page, where without it every page read and sorted every terminal (two per store
-- of a chain of thousands). Built CONCURRENTLY, as 00004 says why and how.

-- +goose NO TRANSACTION
-- +goose Up
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS terminals_by_create_time;
CREATE INDEX CONCURRENTLY terminals_by_create_time ON terminals (create_time, id);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS terminals_by_create_time;
