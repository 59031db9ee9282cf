package posadapter

import (
	"crypto/subtle"
	"slices"
	"sync"
	"time"
)

// credentialCache remembers, for a short while, the terminals whose rows a call read: most of
// a terminal's calls (four per order: accept, ready, hand over, acknowledge) then check its
// credential in memory instead of reading its row again.
//
// Revocation still takes effect at once in this process (RevokeTerminal drops the entry before
// it answers) and promptly in every other copy (the TerminalRevoked event drops it there; the
// feed's periodic revocation check too), with the TTL as the safety net should the event be
// lost. A lookup that read the row before a revocation this process heard of does not keep
// what it read (generation), so it cannot bring a revoked terminal back.
type credentialCache struct {
	ttl time.Duration

	mu  sync.Mutex
	m   map[string]cachedTerminal // by terminal id
	gen uint64                    // revocations heard of
	// seen is when this process last recorded a terminal as seen (terminals.last_seen_time).
	seen map[string]time.Time
	// proven are the credentials (SHA-256 of the secret, by terminal id) that worked at their
	// last lookup, whatever the TTL: see known.
	proven map[string][32]byte
}

type cachedTerminal struct {
	hash   [32]byte // SHA-256 of the credential's secret
	stores []string
	until  time.Time
}

// maxCachedTerminals bounds the maps; when one is full it starts again empty.
const maxCachedTerminals = 16384

// get returns the terminal's row as read less than the TTL ago.
func (c *credentialCache) get(id string, now time.Time) (cachedTerminal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[id]
	if !ok || now.After(t.until) {
		return cachedTerminal{}, false
	}
	return t, true
}

// known reports whether a credential of this hash worked for the terminal at its last lookup,
// however long ago, with no revocation heard of since: not one made up, so worth a lookup
// even when its address is over its refusals. It grants only the lookup, which still refuses
// a credential revoked meanwhile.
func (c *credentialCache) known(id string, hash [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.proven[id]
	return ok && subtle.ConstantTimeCompare(hash[:], h[:]) == 1
}

// proved records the outcome of a lookup of the terminal's credential: worked (with this
// hash), or the terminal is unknown or revoked.
func (c *credentialCache) proved(id string, hash [32]byte, worked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !worked {
		delete(c.proven, id)
		return
	}
	if c.proven == nil || len(c.proven) >= maxCachedTerminals {
		c.proven = make(map[string][32]byte)
	}
	c.proven[id] = hash
}

// generation is to be read before the row is, and handed to put.
func (c *credentialCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put keeps a terminal's row (not revoked) read at generation gen, unless a revocation was
// heard of since.
func (c *credentialCache) put(id string, hash []byte, stores []string, gen uint64, now time.Time) {
	if c.ttl <= 0 || len(hash) != 32 {
		return
	}
	t := cachedTerminal{stores: slices.Clone(stores), until: now.Add(c.ttl)}
	copy(t.hash[:], hash)
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil || len(c.m) >= maxCachedTerminals {
		c.m = make(map[string]cachedTerminal)
	}
	c.m[id] = t
}

// revoke forgets a terminal, and anything read before now about any terminal.
func (c *credentialCache) revoke(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, id)
	delete(c.proven, id)
}

// recordSeen reports whether the terminal's last-seen time should be written now: not when
// this process wrote it less than every ago.
func (c *credentialCache) recordSeen(id string, now time.Time, every time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.seen[id]; ok && now.Sub(at) < every {
		return false
	}
	if c.seen == nil || len(c.seen) >= maxCachedTerminals {
		c.seen = make(map[string]time.Time)
	}
	c.seen[id] = now
	return true
}
