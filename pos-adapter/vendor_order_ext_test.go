package posadapter_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// Events arrive out of order (a till that was offline sends its backlog) and apply as of when
// they happened. For a SKU inventory has no row for yet, a sale that arrives before the
// (earlier) count is refused by inventory as stock stands (nothing to take down): that refusal
// is not final, the vendor is told to retry, and the retry, after the count, applies the sale.
func TestVendorSaleArrivingBeforeItsEarlierCountOfANewSKUIsAppliedOnRetry(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-e4", nil)
	secret := e.vendorWebhook("ven-e4")
	now := time.Now()
	post := func(id, typ string, q int32, minutesAgo int) (int, posadapter.VendorResult) {
		b, _ := json.Marshal(posadapter.VendorEvent{EventID: id, Type: typ, SKU: "MUFFIN-1", Quantity: q,
			OccurredAt: new(now.Add(-time.Duration(minutesAgo) * time.Minute))})
		return e.vendorPost("ven-e4", secret, time.Now(), b, nil)
	}
	code, out := post("sale-10-min-ago", "sale", 2, 10) // arrives first
	t.Logf("sale first: HTTP %d %+v", code, out)
	if code != http.StatusServiceUnavailable || out.Status != "deferred" {
		t.Fatalf("sale before any count of the SKU: HTTP %d %+v; want 503 deferred (retry it)", code, out)
	}
	code, out = post("count-20-min-ago", "count", 10, 20)
	t.Logf("count: HTTP %d %+v", code, out)
	code, out = post("sale-10-min-ago", "sale", 2, 10) // the vendor retries what was not applied
	t.Logf("sale retried: HTTP %d %+v", code, out)
	if code != http.StatusOK || out.Status != "applied" {
		t.Fatalf("sale retried after the count: HTTP %d %+v; want 200 applied", code, out)
	}
	if got := s.onHand(t, "ven-e4", "MUFFIN-1"); got != 8 {
		t.Fatalf("on hand %d after a count of 10 (20 min ago) and a sale of 2 (10 min ago) that arrived first; want 8", got)
	}
}

// A sale that cannot apply as stock stands (here of a SKU the store never stocked: a typo, an
// item sold only at the till) is deferred only while a count from before it could still come:
// once it happened longer ago than inventory takes counts (24 h), it is refused for good, and
// so is one first received that long ago without a time of its own. Before, it was deferred
// (503) for ever, the vendor retrying it for as long as it kept trying.
func TestAVendorSaleNoCountCanEverMakeFitIsRefusedInTheEnd(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-hz", map[string]int32{"LATTE-16": 10})
	secret := e.vendorWebhook("ven-hz")
	post := func(id string, occurred *time.Time) (int, posadapter.VendorResult) {
		b, _ := json.Marshal(posadapter.VendorEvent{EventID: id, Type: "sale", SKU: "LATTE-61", Quantity: 1, OccurredAt: occurred})
		return e.vendorPost("ven-hz", secret, time.Now(), b, nil)
	}
	if code, out := post("typo-now", nil); code != http.StatusServiceUnavailable || out.Status != "deferred" {
		t.Fatalf("a sale of a SKU not stocked, just now: HTTP %d %+v; want 503 deferred (its count may yet come)", code, out)
	}
	if code, out := post("typo-old", new(time.Now().Add(-25*time.Hour))); code != http.StatusUnprocessableEntity || out.Status != "refused" {
		t.Fatalf("a sale of a SKU not stocked, 25 h ago: HTTP %d %+v; want 422 refused (no count that old is taken)", code, out)
	}
	// The first one, without a time of its own, retried a day later.
	if _, err := e.pool.Exec(context.Background(), `UPDATE vendor_events SET receive_time = now() - interval '25 hours'
		WHERE store_id = 'ven-hz' AND vendor_event_id = 'typo-now'`); err != nil {
		t.Fatal(err)
	}
	if code, out := post("typo-now", nil); code != http.StatusUnprocessableEntity || out.Status != "refused" {
		t.Fatalf("the same sale retried 25 h after it was first received: HTTP %d %+v; want 422 refused", code, out)
	}
}
