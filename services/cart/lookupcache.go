package cart

import (
	"sync"
	"time"
)

// maxCacheEntries bounds a lookup cache. Catalogs and store chains are far smaller; reaching it
// means something asks for keys without end, and the cache starts over rather than grow.
const maxCacheEntries = 100_000

// lookupCache keeps answers another service gave (catalog variants, inventory stores), each for
// at most ttl, and forgets them as soon as the owner says they changed. Only positive answers go
// in: a "not found" is asked again next time.
//
// A fill that was asked before an invalidation is not stored (the generation check in put), so
// a slow answer can never bring back what an event has just dropped.
type lookupCache[V any] struct {
	mu      sync.RWMutex
	ttl     time.Duration // <= 0: the cache keeps nothing
	entries map[string]cacheEntry[V]
	gen     uint64 // bumped by every invalidation
}

type cacheEntry[V any] struct {
	v       V
	expires time.Time
}

func newLookupCache[V any](ttl time.Duration) *lookupCache[V] {
	return &lookupCache[V]{ttl: ttl, entries: make(map[string]cacheEntry[V])}
}

// get returns key's value if it is known and younger than the TTL.
func (c *lookupCache[V]) get(key string) (V, bool) {
	c.mu.RLock()
	e, ok := c.entries[key]
	c.mu.RUnlock()
	if !ok || time.Now().After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// generation is taken before asking the owner and handed to put with its answer.
func (c *lookupCache[V]) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put stores answers asked for at generation gen, unless something was invalidated since.
func (c *lookupCache[V]) put(gen uint64, values map[string]V) {
	if len(values) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ttl <= 0 || c.gen != gen {
		return
	}
	expires := time.Now().Add(c.ttl)
	if len(c.entries)+len(values) > maxCacheEntries {
		c.entries = make(map[string]cacheEntry[V])
	}
	for k, v := range values {
		c.entries[k] = cacheEntry[V]{v: v, expires: expires}
	}
}

// drop forgets keys, and every entry for which also returns true (also may be nil).
func (c *lookupCache[V]) drop(keys []string, also func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, k := range keys {
		delete(c.entries, k)
	}
	if also != nil {
		for k, e := range c.entries {
			if also(e.v) {
				delete(c.entries, k)
			}
		}
	}
}

// clear forgets everything.
func (c *lookupCache[V]) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}

// off forgets everything and keeps nothing from now on.
func (c *lookupCache[V]) off() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.ttl = 0
	clear(c.entries)
}
