package posadapter_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// A vendor event whose occurred_at is not RFC 3339 is refused naming the field, not with
// json's bare time-parse error.
func TestVendorEventWithABadOccurredAtIsRefusedNamingTheField(t *testing.T) {
	e := newEnv(t)
	secret := e.vendorWebhook("ven-e2")
	body := []byte(`{"event_id":"e-1","type":"sale","sku":"LATTE-16","quantity":1,"occurred_at":"2026-01-02 10:00:00"}`)
	code, out := e.vendorPost("ven-e2", secret, time.Now(), body, nil)
	t.Logf("HTTP %d %+v", code, out)
	if code != http.StatusBadRequest || !strings.HasPrefix(out.Error, "occurred_at") {
		t.Fatalf("HTTP %d %q; want 400 naming occurred_at", code, out.Error)
	}
}

// A count whose quantity is missing (misspelt "qty", left out, or null) is refused: read as 0
// it would wipe the store's stock of the SKU, answered "applied".
func TestVendorCountWithoutAQuantityIsRefusedNotAppliedAsZero(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-e7", map[string]int32{"LATTE-16": 12})
	secret := e.vendorWebhook("ven-e7")
	for i, body := range []string{
		`{"event_id":"count-1","type":"count","sku":"LATTE-16","qty":12}`,
		`{"event_id":"count-2","type":"count","sku":"LATTE-16"}`,
		`{"event_id":"count-3","type":"count","sku":"LATTE-16","quantity":null}`,
	} {
		code, out := e.vendorPost("ven-e7", secret, time.Now(), []byte(body), nil)
		got := s.onHand(t, "ven-e7", "LATTE-16")
		t.Logf("%d: HTTP %d %+v; on hand %d", i, code, out, got)
		if code != http.StatusBadRequest || !strings.Contains(out.Error, "quantity") || got != 12 {
			t.Fatalf("a count without quantity (%s): HTTP %d %+v, on hand %d; want 400 naming quantity and on hand still 12", body, code, out, got)
		}
	}
}

// A field a vendor event does not have is refused naming it: a misspelt occurred_at would
// otherwise apply the event as happening now.
func TestVendorEventWithAnUnknownFieldIsRefusedNamingIt(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-unknown", map[string]int32{"LATTE-16": 12})
	secret := e.vendorWebhook("ven-unknown")
	body := []byte(`{"event_id":"sale-1","type":"sale","sku":"LATTE-16","quantity":2,"occured_at":"2026-01-02T10:00:00Z"}`)
	code, out := e.vendorPost("ven-unknown", secret, time.Now(), body, nil)
	got := s.onHand(t, "ven-unknown", "LATTE-16")
	t.Logf("HTTP %d %+v; on hand %d", code, out, got)
	if code != http.StatusBadRequest || !strings.Contains(out.Error, `"occured_at"`) || got != 12 {
		t.Fatalf("HTTP %d %+v, on hand %d; want 400 naming occured_at and on hand still 12", code, out, got)
	}
}

// A field spelt otherwise than a vendor event's ("Quantity") or given twice is refused naming it,
// and changes nothing. Before, Go's JSON decoding took the one case-insensitively and the other
// as its last value: a body another reader takes differently was applied.
func TestVendorEventWithAFieldMisspeltInCaseOrGivenTwiceIsRefused(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-keys", map[string]int32{"LATTE-16": 12})
	secret := e.vendorWebhook("ven-keys")
	for _, tc := range []struct{ body, names string }{
		{`{"event_id":"c-1","type":"count","sku":"LATTE-16","Quantity":7}`, `"Quantity"`},
		{`{"event_id":"c-2","type":"count","sku":"LATTE-16","quantity":5,"quantity":9}`, "quantity: given twice"},
	} {
		code, out := e.vendorPost("ven-keys", secret, time.Now(), []byte(tc.body), nil)
		if got := s.onHand(t, "ven-keys", "LATTE-16"); code != http.StatusBadRequest || !strings.Contains(out.Error, tc.names) || got != 12 {
			t.Errorf("%s: HTTP %d %+v, on hand %d; want 400 naming %s and on hand still 12", tc.body, code, out, got, tc.names)
		}
	}
}

// A sale inventory refuses (here: nothing on hand to take down yet) is answered in the
// vendor's words: its quantity, not inventory's "delta" and its negated value.
func TestVendorInventoryRefusalNamesTheVendorsField(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-e6", nil)
	secret := e.vendorWebhook("ven-e6")
	code, out := e.vendorPost("ven-e6", secret, time.Now(), vendorEvent("s-1", "sale", "NEW-SKU", 2), nil)
	t.Logf("HTTP %d %+v", code, out)
	// Refused as stock stands now, so answered for a retry (TestVendorSaleArrivingBeforeItsEarlierCountOfANewSKUIsAppliedOnRetry).
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(out.Error, "quantity: a sale of 2 ") || strings.Contains(out.Error, "delta") {
		t.Fatalf("HTTP %d %q; want 503 naming quantity (the vendor's field), not inventory's delta", code, out.Error)
	}
}

// cutBody gives the start of an event, then fails with err, as a body does whose read deadline
// passed (the edge's time limit) or whose connection dropped.
type cutBody struct {
	sent bool
	err  error
}

func (b *cutBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, `{"event_id":"e-1"`), nil
	}
	return 0, b.err
}

// A vendor body that did not arrive is told so: 408 when it was cut off by the time limit, 400
// when its connection dropped, for the vendor to send it again; only a body over the limit is
// 413. Found by review: every failed read was answered 413 "body over 65536 bytes", a 17-byte
// body that stalled included.
func TestAVendorBodyThatDidNotArriveIsToldSoNotThatItIsTooLarge(t *testing.T) {
	e := newEnv(t)
	e.mu.Lock()
	h := e.adapter.Handler()
	e.mu.Unlock()
	for _, c := range []struct {
		name string
		body io.Reader
		want int
	}{
		{"stalled past the time limit", &cutBody{err: os.ErrDeadlineExceeded}, http.StatusRequestTimeout},
		{"cut off", &cutBody{err: io.ErrUnexpectedEOF}, http.StatusBadRequest},
		{"over 64 KiB", bytes.NewReader(make([]byte, 64<<10+1)), http.StatusRequestEntityTooLarge},
	} {
		req := httptest.NewRequest(http.MethodPost, posadapter.VendorWebhookPath+"ven-cut", io.NopCloser(c.body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out posadapter.VendorResult
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		if rec.Code != c.want || c.want != http.StatusRequestEntityTooLarge && strings.Contains(out.Error, "body over") {
			t.Errorf("a body %s: HTTP %d %q; want %d", c.name, rec.Code, out.Error, c.want)
		}
	}
}
