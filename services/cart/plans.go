package cart

// The cart's statements that find a cart by id name its open state as a parameter ($n =
// stateOpen), never as the constant 'open'. The pool plans each statement once per connection
// (pgdb.WithKeyedPlans); with the constant, that generic plan may walk carts_abandoned, the
// partial index of every open cart that the abandoned-cart sweep reads, and filter for the id.
// Entries of carts checked out stay in that index until a vacuum, so every edit and checkout
// would read every cart open since the last vacuum. With a parameter the only index that fits
// is the cart's own key.
const (
	// claimOneSQL is claimManySQL for one cart, run after a batch's claim missed.
	claimOneSQL = `
		UPDATE carts SET checkout_key = $3,
		       checkout_until = greatest(checkout_until, now() + $5::bigint * interval '1 microsecond'),
		       checkout_joins = CASE WHEN checkout_until IS NULL THEN 1 ELSE checkout_joins + 1 END,
		       checkout_time = CASE WHEN checkout_until IS NULL THEN now() ELSE checkout_time END
		WHERE id = $1 AND customer_id = $2 AND state = $6
		  AND (checkout_until IS NULL OR (checkout_key = $3 AND checkout_until > now()))
		  AND ($4::bigint = 0 OR version = $4)
		  AND jsonb_array_length(lines) > 0
		  AND (pickup_store_id IS NOT NULL OR near_lat IS NOT NULL)
		RETURNING ` + cartColumns

	// editOneSQL is editManySQL for one cart, in a transaction's edit.
	editOneSQL = `
		UPDATE carts SET lines = $4, pickup_store_id = $5, near_lat = $6, near_lng = $7, near_radius_m = $8,
		       version = version + 1, update_time = now(), recent_edits = (ARRAY[$9::uuid] || recent_edits)[1:` + recentEdits + `]
		WHERE id = $1 AND customer_id = $2 AND version = $3
		  AND state = $10 AND checkout_until IS NULL
		RETURNING version, update_time`

	// reopenLapsedSQL opens a cart whose checkout's lease lapsed and made no order.
	reopenLapsedSQL = `UPDATE carts SET checkout_until = NULL
		WHERE id = $1 AND checkout_key = $2 AND state = $3 AND checkout_until <= now()`

	// endLeaseSQL opens a cart after a checkout whose key has a rejected order: every request
	// with the key is answered that order.
	endLeaseSQL = `UPDATE carts SET checkout_until = NULL WHERE id = $1 AND checkout_key = $2 AND state = $3`

	// leaveLeaseSQL takes a request that failed without an order out of its cart's lease
	// (checkout_joins counts the requests in it) and opens the cart when it was the last: any
	// other may be placing the order at that moment. It says whether the cart opened.
	leaveLeaseSQL = `UPDATE carts SET checkout_joins = checkout_joins - 1,
		       checkout_until = CASE WHEN checkout_joins <= 1 THEN NULL ELSE checkout_until END
		WHERE id = $1 AND checkout_key = $2 AND state = $3 AND checkout_until IS NOT NULL
		RETURNING checkout_until IS NULL`
)
