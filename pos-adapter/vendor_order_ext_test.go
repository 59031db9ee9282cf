package posadapter_test

import (
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
