package posadapter

import (
	"bytes"
	"testing"
	"time"
)

func TestCredentialCacheKeepsNothingReadBeforeARevocation(t *testing.T) {
	c := credentialCache{ttl: time.Minute}
	hash := bytes.Repeat([]byte{7}, 32)
	now := time.Now()

	gen := c.generation()
	c.put("trm1", hash, []string{"s1"}, gen, now)
	if _, ok := c.get("trm1", now); !ok {
		t.Fatal("a row read with no revocation since is not kept")
	}
	if _, ok := c.get("trm1", now.Add(2*time.Minute)); ok {
		t.Fatal("a row is kept past the TTL")
	}

	// A lookup reads the row, a revocation is heard of meanwhile, then the lookup stores what
	// it read: it must not be kept (it may say "not revoked").
	gen = c.generation()
	c.revoke("trm1")
	c.put("trm1", hash, []string{"s1"}, gen, now)
	if _, ok := c.get("trm1", now); ok {
		t.Fatal("a row read before a revocation was kept")
	}

	if !c.recordSeen("trm1", now, time.Minute) || c.recordSeen("trm1", now.Add(time.Second), time.Minute) ||
		!c.recordSeen("trm1", now.Add(2*time.Minute), time.Minute) {
		t.Fatal("last seen is not written once a minute")
	}
}
