package inventory

// keyedPlansSQL starts every transaction that reserves, changes holds or moves stock. Their
// statements find rows only by key (a store and SKU, an order, a hold id), so one plan serves
// every call: Postgres plans each once per connection (force_generic_plan) instead of on
// every call, which with array parameters it otherwise keeps doing — planning was a third of
// their time, about 0.1 ms of CPU per checkout. enable_seqscan=off keeps that one plan on the
// indexes even when it is made while a table is nearly empty (a fresh system): a generic plan
// made then would scan the whole table, and keep scanning it as it grows.
//
// jit=off because enable_seqscan=off prices a statement that must scan at 10^10, which would
// set off JIT compiling (100 ms and more) for it; see pgdb.WithKeyedPlans, which does the same
// for a whole pool.
//
// Every transaction that runs these statements sets it, because a connection caches one
// generic plan per statement, whichever transaction made it.
const keyedPlansSQL = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true),
	set_config('jit', 'off', true)`
