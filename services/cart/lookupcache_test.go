package cart

import (
	"testing"
	"time"
)

func TestLookupCacheDropsStaleFillsAndExpiredEntries(t *testing.T) {
	c := newLookupCache[string](time.Hour)
	c.put(c.generation(), map[string]string{"a": "1", "b": "2"})
	if v, ok := c.get("a"); !ok || v != "1" {
		t.Fatalf("get a = %q, %v; want 1", v, ok)
	}

	// An answer asked before an invalidation is not kept: it may predate the change.
	asked := c.generation()
	c.drop([]string{"a"}, nil)
	c.put(asked, map[string]string{"a": "stale"})
	if v, ok := c.get("a"); ok {
		t.Fatalf("a fill asked before the invalidation was stored: %q", v)
	}
	if _, ok := c.get("b"); !ok {
		t.Fatal("dropping a dropped b too")
	}

	c.drop(nil, func(v string) bool { return v == "2" })
	if _, ok := c.get("b"); ok {
		t.Fatal("b kept although its value matched the drop")
	}

	short := newLookupCache[string](time.Millisecond)
	short.put(short.generation(), map[string]string{"a": "1"})
	time.Sleep(5 * time.Millisecond)
	if _, ok := short.get("a"); ok {
		t.Fatal("an entry outlived its TTL")
	}

	off := newLookupCache[string](-1)
	off.put(off.generation(), map[string]string{"a": "1"})
	if _, ok := off.get("a"); ok {
		t.Fatal("a cache with a negative TTL kept an entry")
	}
}
