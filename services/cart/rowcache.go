package cart

import "sync"

// maxRememberedCarts bounds rowCache: a few hundred bytes a cart, a few tens of megabytes in
// all, and far more carts than are being filled at any moment.
const maxRememberedCarts = 100_000

// rowCache remembers each cart as this copy of the service last wrote it, so that a shopper's
// next edit starts from it instead of reading the row again: one statement per edit instead of
// two. It cannot make a change wrong: the edit's UPDATE only matches the row at the version it
// was decided on, still open and not being checked out, so a copy that went stale (another
// copy of the service, a checkout, the abandonment sweep changed the row) makes the write miss,
// and the edit is then decided again on the row as stored. A refusal is never given on a
// remembered copy either (see Service.mutate).
type rowCache struct {
	mu   sync.Mutex
	rows map[string]*cartRow
}

func newRowCache() *rowCache { return &rowCache{rows: map[string]*cartRow{}} }

// get returns the remembered cart id if it is customer's, else nil. The row is shared: clone
// it before changing it.
func (rc *rowCache) get(id, customer string) *cartRow {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if c := rc.rows[id]; c != nil && c.CustomerID == customer {
		return c
	}
	return nil
}

// put remembers c as stored; c must not change afterwards. When full, an arbitrary cart is
// forgotten: forgetting one only costs its next edit a read.
func (rc *rowCache) put(c *cartRow) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, ok := rc.rows[c.ID]; !ok && len(rc.rows) >= maxRememberedCarts {
		for id := range rc.rows {
			delete(rc.rows, id)
			break
		}
	}
	rc.rows[c.ID] = c
}

// drop forgets cart id.
func (rc *rowCache) drop(id string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	delete(rc.rows, id)
}
