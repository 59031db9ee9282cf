package posadapter_test

import (
	"net/http"
	"testing"
	"time"
)

// Two different vendor events whose ids differ only in bytes that are not valid UTF-8 (a till
// that sends Latin-1, say), or in unpaired surrogate escapes, must not be taken for one
// another: Go's JSON decoding turns each into U+FFFD, so "sale-\xe9" and "sale-\xe8" both
// become "sale-\uFFFD", and the second sale is answered "duplicate" and never taken off. Such a
// body is refused (400) naming the field, changing nothing; a proper surrogate pair (an emoji)
// is text like any other.
func TestVendorEventIdsThatAreNotUTF8AreNotMergedIntoOne(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-utf8", map[string]int32{"LATTE-16": 12})
	secret := e.vendorWebhook("ven-utf8")
	for _, pair := range [][2]string{{"sale-\xe9", "sale-\xe8"}, {`sale-\ud800`, `sale-\udc01`}} {
		var codes []int
		var statuses []string
		before := s.onHand(t, "ven-utf8", "LATTE-16")
		for _, id := range pair {
			body := []byte(`{"event_id":"` + id + `","type":"sale","sku":"LATTE-16","quantity":1}`)
			code, out := e.vendorPost("ven-utf8", secret, time.Now(), body, nil)
			t.Logf("event %q: HTTP %d %+v", id, code, out)
			codes, statuses = append(codes, code), append(statuses, out.Status)
		}
		got := s.onHand(t, "ven-utf8", "LATTE-16")
		refused := codes[0] == http.StatusBadRequest && codes[1] == http.StatusBadRequest && got == before
		bothApplied := statuses[0] == "applied" && statuses[1] == "applied" && got == before-2
		if !refused && !bothApplied {
			t.Errorf("two distinct sales with ids %q: answers %v %v, on hand %d → %d; want both refused as 400 (on hand unchanged) or both applied (2 taken off)",
				pair, codes, statuses, before, got)
		}
	}
	body := []byte(`{"event_id":"sale-\ud83d\ude00","type":"sale","sku":"LATTE-16","quantity":1}`)
	if code, out := e.vendorPost("ven-utf8", secret, time.Now(), body, nil); code != http.StatusOK || out.Status != "applied" {
		t.Errorf("an id with an escaped surrogate pair: HTTP %d %+v; want applied", code, out)
	}
}
