package posadapter

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// strictVendorEvent reads a vendor event as a strict, case-sensitive reader that takes no
// duplicate keys would (another system reading the same body): nil when it would not take it.
func strictVendorEvent(body []byte) map[string]any {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil
	}
	out := map[string]any{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil
		}
		key := k.(string)
		if _, dup := out[key]; dup {
			return nil
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil
		}
		out[key] = v
	}
	return out
}

// FuzzDecodeVendorEvent: a vendor body is taken only when it says one thing: every field as
// spelt, once, with text that is exactly what it spells; what it is taken as is what a strict
// reader reads, within the bounds check() sets. A refusal names what is wrong and never
// panics.
func FuzzDecodeVendorEvent(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"e1","type":"sale","sku":"LATTE-12","quantity":2}`,
		`{"event_id":"e1","type":"count","sku":"LATTE-12","quantity":0,"occurred_at":"2026-03-01T10:00:00Z"}`,
		`{"event_id":"e1","type":"count","sku":"LATTE-12","quantity":0,"occurred_at":null}`,
		`{"event_id":"e1","type":"count","sku":"LATTE-12","Quantity":5}`,
		`{"event_id":"e1","type":"count","sku":"LATTE-12","quantity":5,"quantity":0}`,
		`{"event_id":"e\ud800","type":"sale","sku":"X","quantity":1}`,
		`{"event_id":"e\u00e9\\ud800","type":"sale","sku":"X","quantity":1}`,
		`{"event_id":"e1","type":"sale","sku":"X","quantity":1} {}`,
		`{"event_id":"e1","type":"sale","sku":"X","quantity":1.0}`,
		`{"event_id":"e1","type":"return","sku":"X","quantity":2147483648}`,
		`{"event_id":"e1","type":"count","sku":"X","quantity":3,"occurred_at":"0000-01-01T00:00:00+01:00"}`,
		`null`, `[]`, `{"event\u005fid":"e1","type":"sale","sku":"X","quantity":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, msg := decodeVendorEvent(body)
		if msg == "" {
			msg = ev.check()
		}
		if msg != "" {
			return
		}
		strict := strictVendorEvent(body)
		if strict == nil {
			t.Fatalf("body %q taken as %+v, but a strict reader refuses it", body, ev)
		}
		for k := range strict {
			if !vendorKeys[k] {
				t.Fatalf("body %q taken with key %q", body, k)
			}
		}
		for k, want := range map[string]string{"event_id": ev.EventID, "type": ev.Type, "sku": ev.SKU} {
			if got, _ := strict[k].(string); got != want || strings.ContainsRune(got, utf8.RuneError) && !strings.Contains(string(body), "\ufffd") && !strings.Contains(strings.ToLower(string(body)), `\ufffd`) {
				t.Fatalf("body %q taken with %s %q, a strict reader reads %q", body, k, want, got)
			}
		}
		q, ok := strict["quantity"].(json.Number)
		if !ok || q.String() == "" {
			t.Fatalf("body %q taken without a quantity: %v", body, strict["quantity"])
		}
		if n, err := q.Int64(); err != nil || n != int64(ev.Quantity) {
			t.Fatalf("body %q taken with quantity %d, a strict reader reads %s", body, ev.Quantity, q)
		}
		at, given := strict["occurred_at"]
		switch {
		case (!given || at == nil) && ev.OccurredAt != nil:
			t.Fatalf("body %q taken with occurred_at %v, which it does not give", body, ev.OccurredAt)
		case given && at != nil && ev.OccurredAt == nil:
			t.Fatalf("body %q taken without its occurred_at %v", body, at)
		case given && at != nil:
			s, _ := at.(string)
			p, err := time.Parse(time.RFC3339Nano, s)
			if err != nil || !p.Equal(*ev.OccurredAt) {
				t.Fatalf("body %q taken with occurred_at %v, RFC 3339 reads %v (%v)", body, ev.OccurredAt, p, err)
			}
		}
		// What is taken is stored: its request must encode.
		if _, err := vendorRequest("store-1", ev); err != nil {
			t.Fatalf("body %q taken, but its request does not encode: %v", body, err)
		}
	})
}

// FuzzParseSignature: no header verifies a body unless it carries the HMAC of that body and
// its timestamp under the secret; a header Sign made verifies; a refusal is one of the errors
// VerifySignature documents.
func FuzzParseSignature(f *testing.F) {
	now := time.Unix(1772366400, 0)
	f.Add(Sign("whsec_x", now, []byte("{}")), []byte("{}"), int64(0))
	f.Add(SignWith([]string{"new", "whsec_x"}, now, []byte("{}")), []byte("{}"), int64(30))
	f.Add("t=1772366400,v1=00", []byte("x"), int64(0))
	f.Add("t=1772366400,t=1772366400,v1="+strings.Repeat("ab", 32), []byte("x"), int64(0))
	f.Add("t=-9223372036854775808,v1="+strings.Repeat("ab", 32), []byte("x"), int64(0))
	f.Add(" t = 1 ,v1=", []byte(""), int64(-400))
	f.Fuzz(func(t *testing.T, header string, body []byte, skew int64) {
		at := now.Add(time.Duration(skew%1000) * time.Second)
		err := VerifySignature("whsec_x", header, body, at, 5*time.Minute)
		if err != nil {
			if !errors.Is(err, ErrNoSignature) && !errors.Is(err, ErrMalformedSignature) && !errors.Is(err, ErrStaleSignature) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("header %q: undocumented error %v", header, err)
			}
		} else {
			h, perr := parseSignature(header, at, 5*time.Minute)
			if perr != nil {
				t.Fatalf("header %q verified but does not parse: %v", header, perr)
			}
			if want := Sign("whsec_x", time.Unix(h.ts, 0), body); !strings.Contains(header, want[strings.Index(want, "v1="):]) {
				t.Fatalf("header %q verified body %q without its signature %q", header, body, want)
			}
			if d := at.Sub(time.Unix(h.ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
				t.Fatalf("header %q verified %v from now", header, d)
			}
		}
		// The header Sign makes for this body verifies, whatever the fuzzer's header was.
		if err := VerifySignature("whsec_x", Sign("whsec_x", at, body), body, at, 5*time.Minute); err != nil {
			t.Fatalf("Sign's own header refused: %v", err)
		}
	})
}
