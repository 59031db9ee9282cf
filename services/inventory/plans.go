package inventory

import "github.com/handoff-dev/handoff/internal/pgdb"

// keyedPlansSQL starts every transaction that reserves, changes holds or moves stock. Their
// statements find rows only by key (a store and SKU, an order, a hold id), so one plan serves
// every call: Postgres plans each once per connection (force_generic_plan) instead of on
// every call, which with array parameters it otherwise keeps doing — planning was a third of
// their time, about 0.1 ms of CPU per checkout. enable_seqscan=off keeps that one plan on the
// indexes even when it is made while a table is nearly empty (a fresh system): a generic plan
// made then would scan the whole table, and keep scanning it as it grows.
//
// The settings are pgdb.WithKeyedPlans's (JIT off too), for these transactions and the
// locator's stock read only, not for the whole pool: admin listings keep the server's settings.
//
// Every transaction that runs these statements sets them, because a connection caches one
// generic plan per statement, whichever transaction made it.
var keyedPlansSQL = pgdb.KeyedPlansSQL
