package posadapter_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// vendorPOS is a vendor's webhook receiver: it verifies every delivery's signature and
// answers with the status its test sets.
type vendorPOS struct {
	t      testing.TB
	mu     sync.Mutex
	secret string
	status func(attempt int) int
	// attempts and times of each ticket id; delivered holds the tickets answered 2xx.
	attempts  map[string][]time.Time
	delivered map[string]*posv1.Ticket
	badSigs   int
}

func newVendorPOS(t testing.TB) (*vendorPOS, string) {
	v := &vendorPOS{t: t, attempts: map[string][]time.Time{}, delivered: map[string]*posv1.Ticket{}, status: func(int) int { return 200 }}
	srv := httptest.NewServer(http.HandlerFunc(v.serve))
	t.Cleanup(srv.Close)
	return v, srv.URL + "/handoff"
}

func (v *vendorPOS) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := posadapter.VerifySignature(v.secret, r.Header.Get(posadapter.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		v.badSigs++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ev posv1.TicketRaised
	if err := protojson.Unmarshal(body, &ev); err != nil || ev.GetTicket().GetTicketId() != r.Header.Get(posadapter.TicketIDHeader) {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	id := ev.GetTicket().GetTicketId()
	v.attempts[id] = append(v.attempts[id], time.Now())
	code := v.status(len(v.attempts[id]))
	if code < 300 {
		v.delivered[id] = ev.GetTicket()
	}
	w.WriteHeader(code)
}

func (v *vendorPOS) setSecret(s string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.secret = s
}

func (v *vendorPOS) setStatus(f func(attempt int) int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.status = f
}

func (v *vendorPOS) deliveredKinds() []posv1.TicketKind {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []posv1.TicketKind
	for _, t := range v.delivered {
		out = append(out, t.GetKind())
	}
	return out
}

func fastWebhooks(c *posadapter.Config) {
	c.WebhookBackoff = 100 * time.Millisecond
	c.WebhookMaxBackoff = time.Second
	c.WebhookGiveUpAfter = time.Second // attempts at about 0, 0.1, 0.3, 0.7 and 1 s
	c.WebhookPollInterval = 20 * time.Millisecond
}

func TestWebhookDeliveriesAreSignedAndRetriedWithBackoffUntilTheVendorAnswers(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		fastWebhooks(c)
		c.WebhookGiveUpAfter = 10 * time.Second // never given up here
	}))
	vendor, url := newVendorPOS(t)
	// The endpoint is down for its first three tries, whatever ticket they carry, then answers.
	// The store backs off as its endpoint does: a vendor refusing each ticket's first tries
	// instead would answer one ticket's probe and refuse the next ticket sent at once, a new
	// run of failures that rightly starts the backoff over from WebhookBackoff.
	const refused = 3
	tries := 0 // under vendor.mu, as status is called
	vendor.setStatus(func(int) int {
		if tries++; tries <= refused {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "hook-1", Url: url, Enabled: true}}))
	if err != nil || !strings.HasPrefix(res.Msg.GetSigningSecret(), "whsec_") {
		t.Fatalf("SetStoreWebhook = %v, %v; want a new signing secret", res, err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	// Changing the URL keeps the secret unless asked to rotate it.
	again, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "hook-1", Url: url, Enabled: true}}))
	if err != nil || again.Msg.GetSigningSecret() != "" {
		t.Fatalf("second SetStoreWebhook = %v, %v; want the secret kept (not shown again)", again, err)
	}

	o := order("hook-1", 1)
	e.publish("confirmed", o, nil)
	// The second ticket is raised once the first try failed and put the store in backoff, so
	// that every try but the first is one the backoff let through (one claimed with the first,
	// before its failure was recorded, would come at once).
	testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		var backingOff bool
		if err := e.pool.QueryRow(context.Background(), `SELECT retry_time IS NOT NULL FROM store_webhooks WHERE store_id = 'hook-1'`).Scan(&backingOff); err != nil {
			return err
		}
		if !backingOff {
			return fmt.Errorf("store hook-1 not in backoff")
		}
		return nil
	})
	e.publish("cancelled", then(o, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED), &fulfilmentv1.Transition{Reason: "no milk"})
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(vendor.deliveredKinds()); n != 2 {
			return fmt.Errorf("vendor has %d tickets, want 2", n)
		}
		return nil
	})
	vendor.mu.Lock()
	defer vendor.mu.Unlock()
	if vendor.badSigs > 0 {
		t.Fatalf("%d deliveries with a bad signature", vendor.badSigs)
	}
	// The store backs off as a whole: after the failed first try, one ticket at a time tries
	// the endpoint, after the store's wait (100 ms ±20%, doubling per failure in a row), until
	// one is taken; then the other goes at once. A wait starts when the failure is recorded,
	// after the try, and a loaded machine only makes it longer: each gap is at least the wait's
	// least, 80% of 100 ms, 200 ms, 400 ms. Tries at each delivery's own backoff would come two
	// at a time; tries with no backoff, back to back.
	var all []time.Time
	for _, times := range vendor.attempts {
		all = append(all, times...)
	}
	slices.SortFunc(all, time.Time.Compare)
	var gaps []time.Duration
	for i := 1; i < len(all); i++ {
		gaps = append(gaps, all[i].Sub(all[i-1]))
	}
	if len(all) != refused+2 {
		t.Fatalf("the endpoint was tried %d times (%d ms apart), want %d: %d refused, then each ticket taken once", len(all), millis(gaps), refused+2, refused)
	}
	for i := range refused {
		if least := 100 * time.Millisecond << i * 8 / 10; gaps[i] < least {
			t.Fatalf("the store's tries %d ms apart; want the backoff (100ms) doubling from the first failure: try %d came %v after the last, before the least wait %v", millis(gaps), i+2, gaps[i], least)
		}
	}
	if last := gaps[refused]; last >= time.Second {
		t.Fatalf("the store's tries %d ms apart; want the last ticket sent at once after the endpoint answered, not %v later", millis(gaps), last)
	}
}

func millis(ds []time.Duration) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.Milliseconds()
	}
	return out
}

func TestFailedWebhookDeliveriesBecomeDeadLettersAnOperatorCanReplay(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks))
	vendor, url := newVendorPOS(t)
	vendor.setStatus(func(int) int { return http.StatusInternalServerError })
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "dead-1", Url: url, Enabled: true, Kinds: []posv1.TicketKind{posv1.TicketKind_TICKET_KIND_NEW_ORDER}}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	o := order("dead-1", 1)
	e.publish("confirmed", o, nil)
	e.publish("cancelled", then(o, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED), nil) // not a kind it wants

	var failed []*posv1.FailedDelivery
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "dead-1"}))
		if err != nil {
			return err
		}
		failed = res.Msg.GetDeliveries()
		if len(failed) != 1 {
			return fmt.Errorf("%d dead letters, want 1", len(failed))
		}
		return nil
	})
	d := failed[0]
	if d.GetAttempts() < 3 || !strings.Contains(d.GetLastError(), "500") || d.GetFailTime() == nil {
		t.Fatalf("dead letter %v; want its attempts (3 or more) and the last error", d)
	}

	vendor.setStatus(func(int) int { return http.StatusOK })
	if _, err := e.admin().ReplayDelivery(context.Background(), req(&posv1.ReplayDeliveryRequest{DeliveryId: d.GetId()})); err != nil {
		t.Fatalf("ReplayDelivery: %v", err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if k := vendor.deliveredKinds(); len(k) != 1 || k[0] != posv1.TicketKind_TICKET_KIND_NEW_ORDER {
			return fmt.Errorf("vendor has %v, want the new order", k)
		}
		return nil
	})
	left, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{}))
	if err != nil || len(left.Msg.GetDeliveries()) != 0 {
		t.Fatalf("dead letters after the replay: %v, %v; want none", left, err)
	}
	// A token of the right shape with an id no delivery can have (the query reads it as a uuid).
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"t":"2026-01-01T00:00:00Z","id":"not-a-uuid"}`))
	_, err = e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{PageToken: forged}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "page_token") {
		t.Fatalf("a forged page token: %v; want InvalidArgument naming page_token", err)
	}
	_, err = e.admin().ReplayDelivery(context.Background(), req(&posv1.ReplayDeliveryRequest{DeliveryId: d.GetId()}))
	if codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("replaying a delivered delivery: %v; want FailedPrecondition", err)
	}
	for _, bad := range []string{"http://vendor.example/hook", "ftp://127.0.0.1/x", "https://user:pw@vendor.example/",
		"https://vendor.example:99999/hook", "https://vendor.example:0/hook", "https://:443/hook"} {
		_, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "dead-1", Url: bad}}))
		if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "webhook.url") {
			t.Fatalf("webhook URL %s: %v; want InvalidArgument naming webhook.url", bad, err)
		}
	}
}

// A vendor POS down for longer than a run of retries (a router rebooting) gets every ticket of
// that time once it answers again, none kept as a dead letter: a delivery is retried for as
// long as its ticket is of use (the replay window by default), at most WebhookMaxBackoff apart,
// not for a number of attempts. One still failing when that time is up is kept as a dead
// letter, as before. (Here the replay window is 5 s; eight attempts, the old limit, took about
// 1.2 s with this backoff.)
func TestAVendorPOSBackAfterALongOutageGetsEveryTicketOfIt(t *testing.T) {
	const giveUp = 5 * time.Second
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		c.WebhookBackoff = 50 * time.Millisecond
		c.WebhookMaxBackoff = 200 * time.Millisecond
		c.WebhookPollInterval = 20 * time.Millisecond
		c.ReplayWindow = giveUp // and so how long a delivery is retried, by default
	}))
	down := func(int) int { return http.StatusServiceUnavailable }
	back, backURL := newVendorPOS(t)
	gone, goneURL := newVendorPOS(t)
	for store, v := range map[string]struct {
		pos *vendorPOS
		url string
	}{"outage-1": {back, backURL}, "outage-2": {gone, goneURL}} {
		v.pos.setStatus(down)
		res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: store, Url: v.url, Enabled: true}}))
		if err != nil {
			t.Fatal(err)
		}
		v.pos.setSecret(res.Msg.GetSigningSecret())
	}
	start := time.Now()
	for i := 1; i <= 3; i++ {
		e.publish("confirmed", order("outage-1", i), nil)
	}
	e.publish("confirmed", order("outage-2", 1), nil)

	time.Sleep(giveUp / 2) // twice as long as eight attempts took
	back.setStatus(func(int) int { return http.StatusOK })
	testenv.CheckFor(t, giveUp, 20*time.Millisecond, func() error {
		if n := len(back.deliveredKinds()); n != 3 {
			return fmt.Errorf("the vendor POS back after the outage has %d of its 3 tickets", n)
		}
		return nil
	})

	var failed []*posv1.FailedDelivery
	testenv.CheckFor(t, 2*giveUp, 20*time.Millisecond, func() error {
		res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "outage-2"}))
		if err != nil {
			return err
		}
		if failed = res.Msg.GetDeliveries(); len(failed) != 1 {
			return fmt.Errorf("%d dead letters for the vendor POS that never came back, want 1", len(failed))
		}
		return nil
	})
	if d := failed[0]; d.GetFailTime().AsTime().Sub(start) < giveUp-500*time.Millisecond || d.GetAttempts() <= 8 {
		t.Fatalf("dead letter %v after %s; want it given up once its ticket was %s old, after more than 8 attempts",
			d, d.GetFailTime().AsTime().Sub(start), giveUp)
	}
	res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "outage-1"}))
	if err != nil || len(res.Msg.GetDeliveries()) != 0 {
		t.Fatalf("dead letters of the vendor POS that came back: %v, %v; want none", res, err)
	}
}

// vendorPost signs body with secret at ts and posts it to the store's inbound endpoint.
func (e *env) vendorPost(store, secret string, ts time.Time, body []byte, sigBody []byte) (int, posadapter.VendorResult) {
	e.t.Helper()
	if sigBody == nil {
		sigBody = body
	}
	r, _ := http.NewRequest(http.MethodPost, e.base+posadapter.VendorWebhookPath+store, bytes.NewReader(body))
	if secret != "" {
		r.Header.Set(posadapter.SignatureHeader, posadapter.Sign(secret, ts, sigBody))
	}
	res, err := e.http1.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out posadapter.VendorResult
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// vendorWebhook sets the store's vendor webhook and returns its signing secret.
func (e *env) vendorWebhook(store string) string {
	e.t.Helper()
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: store, Url: "https://pos.vendor.example/handoff"}}))
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Msg.GetSigningSecret()
}

func vendorEvent(id, typ, sku string, q int32) []byte {
	b, _ := json.Marshal(posadapter.VendorEvent{EventID: id, Type: typ, SKU: sku, Quantity: q})
	return b
}

func TestVendorInStoreEventsAdjustStockOnceAndForgedOnesChangeNothing(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-1", map[string]int32{"LATTE-16": 10})
	s.addStore(t, "ven-2", map[string]int32{"LATTE-16": 10})
	if _, err := s.invAdmin.SetStock(context.Background(), &inventoryv1.SetStockRequest{StoreId: "ven-1", Sku: "LATTE-16", OnHand: 10, SafetyStock: 2, IdempotencyKey: "safety"}); err != nil {
		t.Fatal(err)
	}
	secret := e.vendorWebhook("ven-1")
	now := time.Now()
	onHand := func() int32 { return s.onHand(t, "ven-1", "LATTE-16") }
	expect := func(what string, code int, status string, gotCode int, got posadapter.VendorResult, stock int32) {
		t.Helper()
		if gotCode != code || got.Status != status {
			t.Fatalf("%s: HTTP %d %+v; want %d %q", what, gotCode, got, code, status)
		}
		if n := onHand(); n != stock {
			t.Fatalf("%s: on hand %d, want %d", what, n, stock)
		}
	}

	sale := vendorEvent("v-1", "sale", "LATTE-16", 3)
	code, out := e.vendorPost("ven-1", secret, now, sale, nil)
	expect("sale", 200, "applied", code, out, 7)
	code, out = e.vendorPost("ven-1", secret, now, sale, nil)
	expect("the same sale again", 200, "duplicate", code, out, 7)

	// Forged, tampered, replayed: 401, nothing changes.
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-2", "sale", "LATTE-16", 9), vendorEvent("v-2", "sale", "LATTE-16", 1))
	expect("tampered body", 401, "", code, out, 7)
	code, out = e.vendorPost("ven-1", secret, now.Add(-10*time.Minute), vendorEvent("v-3", "sale", "LATTE-16", 1), nil)
	expect("replayed (stale timestamp)", 401, "", code, out, 7)
	code, out = e.vendorPost("ven-1", secret, now.Add(10*time.Minute), vendorEvent("v-4", "sale", "LATTE-16", 1), nil)
	expect("timestamp from the future", 401, "", code, out, 7)
	code, out = e.vendorPost("ven-1", "whsec_guessed", now, vendorEvent("v-5", "sale", "LATTE-16", 1), nil)
	expect("wrong secret", 401, "", code, out, 7)
	code, out = e.vendorPost("ven-1", "", now, vendorEvent("v-6", "sale", "LATTE-16", 1), nil)
	expect("unsigned", 401, "", code, out, 7)
	code, out = e.vendorPost("ven-2", secret, now, vendorEvent("v-7", "sale", "LATTE-16", 1), nil)
	if code != 401 || s.onHand(t, "ven-2", "LATTE-16") != 10 {
		t.Fatalf("another store's event signed with ven-1's secret: HTTP %d; want 401 and no change", code)
	}
	// A stale copy of an event already applied is refused too, not reported as a duplicate.
	code, out = e.vendorPost("ven-1", secret, now.Add(-time.Hour), sale, nil)
	expect("stale copy of an applied event", 401, "", code, out, 7)

	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-1", "sale", "LATTE-16", 4), nil)
	expect("event id reused for another change", 409, "refused", code, out, 7)
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-8", "return", "LATTE-16", 1), nil)
	expect("return", 200, "applied", code, out, 8)
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-9", "count", "LATTE-16", 20), nil)
	expect("count", 200, "applied", code, out, 20)
	// A SKU inventory has no stock of may be one whose count is still to come (events arrive out
	// of order): the sale is not refused for good but deferred, for the vendor to retry.
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-10", "sale", "NO-SUCH-SKU", 1), nil)
	if code != 503 || out.Status != "deferred" {
		t.Fatalf("unknown SKU: HTTP %d %+v; want 503 deferred", code, out)
	}
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-11", "sale", "LATTE-16", 0), nil)
	expect("zero sale", 400, "", code, out, 20)
	code, out = e.vendorPost("ven-1", secret, now, []byte("{not json"), nil)
	expect("malformed body", 400, "", code, out, 20)
	// Text Postgres cannot store is the vendor's mistake, said as such, not a 503 to retry for ever.
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-12\x00", "sale", "LATTE-16", 1), nil)
	expect("NUL in the event id", 400, "", code, out, 20)
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-13", "sale", "LATTE\x00", 1), nil)
	expect("NUL in the SKU", 400, "", code, out, 20)
	if !strings.Contains(out.Error, "sku") {
		t.Fatalf("NUL in the SKU: %+v; want the error to name sku", out)
	}

	levels, err := s.invAdmin.ListStock(context.Background(), &inventoryv1.ListStockRequest{StoreId: "ven-1", Skus: []string{"LATTE-16"}})
	if err != nil || levels.GetLevels()[0].GetSafetyStock() != 2 {
		t.Fatalf("after a count: %v, %v; want the safety stock (2) kept", levels, err)
	}
	moves, err := s.invAdmin.ListMovements(context.Background(), &inventoryv1.ListMovementsRequest{StoreId: "ven-1", Sku: "LATTE-16", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	vendorMoves := 0
	for _, m := range moves.GetMovements() {
		if strings.HasPrefix(m.GetIdempotencyKey(), "vendor:") {
			vendorMoves++
		}
	}
	if vendorMoves != 3 {
		t.Fatalf("%d vendor movements in the ledger, want 3 (sale, return, count)", vendorMoves)
	}

	// The webhook was set without enabled (no deliveries), and the vendor's own events were
	// taken all the same. Rotating the secret is how to refuse them: the old one stops working.
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "ven-1", Url: "https://pos.vendor.example/handoff"}, RotateSecret: true}))
	if err != nil || res.Msg.GetSigningSecret() == "" || res.Msg.GetSigningSecret() == secret {
		t.Fatalf("rotate: %v, %v; want a new secret", res, err)
	}
	code, out = e.vendorPost("ven-1", secret, now, vendorEvent("v-14", "sale", "LATTE-16", 1), nil)
	expect("the old secret after a rotation", 401, "", code, out, 20)
	code, out = e.vendorPost("ven-1", res.Msg.GetSigningSecret(), now, vendorEvent("v-14", "sale", "LATTE-16", 1), nil)
	expect("the new secret", 200, "applied", code, out, 19)
}

// A sale at the till, or a count, has happened whatever is reserved online: past the reserved
// units it is applied clamped (on hand kept at what is reserved, so nothing more is promised,
// the shortfall in the ledger for staff to settle), never refused and forgotten, which left
// stock already sold to be promised again.
// A vendor's count that inventory could not take at first (503, the event left pending) is
// applied on the vendor's retry with the store's safety stock as it is then: an operator's
// change made in between stays. (The request built at the first attempt used to carry the
// safety stock read then, and the retry set it back.)
func TestARetriedVendorCountKeepsTheSafetyStockSetMeanwhile(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s), withConfig(func(c *posadapter.Config) { c.CallTimeout = time.Second }))
	ctx := context.Background()
	s.addStore(t, "ven-9", map[string]int32{"LATTE-16": 10})
	setSafety := func(key string, safety int32) {
		t.Helper()
		if _, err := s.invAdmin.SetStock(ctx, &inventoryv1.SetStockRequest{StoreId: "ven-9", Sku: "LATTE-16", OnHand: 10, SafetyStock: safety, IdempotencyKey: key}); err != nil {
			t.Fatal(err)
		}
	}
	setSafety("safety-2", 2)
	secret := e.vendorWebhook("ven-9")

	// Inventory cannot apply the count in time: its stock row is held by another change.
	held, err := s.invPool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Exec(ctx, `SELECT 1 FROM stock WHERE store_id = 'ven-9' AND sku = 'LATTE-16' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	count := vendorEvent("c-1", "count", "LATTE-16", 20)
	code, out := e.vendorPost("ven-9", secret, time.Now(), count, nil)
	if err := held.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable {
		t.Fatalf("the count while inventory is held up: HTTP %d %+v; want 503, to be retried", code, out)
	}

	setSafety("safety-6", 6) // an operator, meanwhile
	code, out = e.vendorPost("ven-9", secret, time.Now(), count, nil)
	if code != http.StatusOK || out.Status != "applied" {
		t.Fatalf("the vendor's retry: HTTP %d %+v; want 200 applied", code, out)
	}
	res, err := s.invAdmin.ListStock(ctx, &inventoryv1.ListStockRequest{StoreId: "ven-9", Skus: []string{"LATTE-16"}})
	if err != nil || len(res.GetLevels()) != 1 {
		t.Fatalf("ListStock: %v, %v", res, err)
	}
	if l := res.GetLevels()[0]; l.GetOnHand() != 20 || l.GetSafetyStock() != 6 {
		t.Fatalf("after the retried count: on hand %d, safety stock %d; want 20 and the operator's 6", l.GetOnHand(), l.GetSafetyStock())
	}
}

func TestVendorSalesPastWhatIsReservedAreAppliedClampedNotRefused(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-3", map[string]int32{"LATTE-16": 10})
	s.placeOrder(t, "ven-3", "k-reserve-8", map[string]int32{"LATTE-16": 8})
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "ven-3", Url: "https://pos.vendor.example/handoff"}}))
	if err != nil {
		t.Fatal(err)
	}
	secret := res.Msg.GetSigningSecret()
	level := func() *inventoryv1.StockLevel {
		t.Helper()
		levels, err := s.invAdmin.ListStock(context.Background(), &inventoryv1.ListStockRequest{StoreId: "ven-3", Skus: []string{"LATTE-16"}})
		if err != nil || len(levels.GetLevels()) != 1 {
			t.Fatalf("stock: %v, %v", levels, err)
		}
		return levels.GetLevels()[0]
	}

	sale := vendorEvent("v-short-1", "sale", "LATTE-16", 5)
	for _, what := range []string{"a sale of 5 with 2 unreserved", "the same sale again"} {
		code, out := e.vendorPost("ven-3", secret, time.Now(), sale, nil)
		if code != 200 || (out.Status != "applied" && out.Status != "duplicate") {
			t.Fatalf("%s: HTTP %d %+v; want it applied", what, code, out)
		}
		if l := level(); l.GetOnHand() != 8 || l.GetReserved() != 8 || l.GetAvailable() != 0 {
			t.Fatalf("%s: %v; want on hand kept at the 8 reserved, nothing available", what, l)
		}
	}
	code, out := e.vendorPost("ven-3", secret, time.Now(), vendorEvent("v-short-2", "count", "LATTE-16", 2), nil)
	if code != 200 || out.Status != "applied" || level().GetOnHand() != 8 {
		t.Fatalf("a count of 2 with 8 reserved: HTTP %d %+v, on hand %d; want applied, on hand 8", code, out, level().GetOnHand())
	}
	moves, err := s.invAdmin.ListMovements(context.Background(), &inventoryv1.ListMovementsRequest{StoreId: "ven-3", Sku: "LATTE-16", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, m := range moves.GetMovements() {
		if strings.HasPrefix(m.GetIdempotencyKey(), "vendor:") {
			notes = append(notes, m.GetNote())
		}
	}
	if len(notes) != 2 || !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "3 units short") }) ||
		!slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "6 units short") }) {
		t.Fatalf("vendor movements' notes %q; want the sale 3 units short and the count 6", notes)
	}
}

// A vendor event refused before it is applied (forged, tampered, stale, malformed, a zero
// quantity, a SKU with a NUL) leaves no trace: not in the stock, not among the events the
// adapter has seen. So the genuine event under the same id, sent after, is applied, not
// answered as a duplicate of the refusal or refused as an id reused for another change.
func TestRefusedVendorEventsLeaveNoTraceAndTheGenuineOneUnderTheirIDApplies(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-1", map[string]int32{"LATTE-16": 10})
	secret := e.vendorWebhook("ven-1")
	now := time.Now()
	seen := func() string {
		t.Helper()
		var n int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM vendor_events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d vendor events, on hand %d", n, s.onHand(t, "ven-1", "LATTE-16"))
	}
	before := seen()
	genuine := vendorEvent("v-x", "sale", "LATTE-16", 3)
	for _, bad := range []struct {
		name          string
		secret        string
		at            time.Time
		body, signed  []byte
		code          int
		errorMentions string
	}{
		{"tampered", secret, now, vendorEvent("v-x", "sale", "LATTE-16", 9), genuine, 401, ""},
		{"stale", secret, now.Add(-time.Hour), genuine, nil, 401, ""},
		{"signed with a guessed secret", "whsec_guessed", now, genuine, nil, 401, ""},
		{"zero quantity", secret, now, vendorEvent("v-x", "sale", "LATTE-16", 0), nil, 400, "quantity"},
		{"unknown type", secret, now, vendorEvent("v-x", "theft", "LATTE-16", 1), nil, 400, "type"},
		{"NUL in the SKU", secret, now, vendorEvent("v-x", "sale", "LATTE\x00", 3), nil, 400, "sku"},
	} {
		code, out := e.vendorPost("ven-1", bad.secret, bad.at, bad.body, bad.signed)
		if code != bad.code || !strings.Contains(out.Error, bad.errorMentions) {
			t.Fatalf("%s: HTTP %d %+v; want %d naming %q", bad.name, code, out, bad.code, bad.errorMentions)
		}
		if after := seen(); after != before {
			t.Fatalf("%s changed something: %s, before %s", bad.name, after, before)
		}
	}
	code, out := e.vendorPost("ven-1", secret, now, genuine, nil)
	if code != 200 || out.Status != "applied" || s.onHand(t, "ven-1", "LATTE-16") != 7 {
		t.Fatalf("the genuine event after the refused ones: HTTP %d %+v, on hand %d; want 200 applied, 7", code, out, s.onHand(t, "ven-1", "LATTE-16"))
	}
}

// A vendor endpoint that answers with a redirect is not followed: the signed ticket would go
// wherever it points, past the URL rules SetStoreWebhook applies. The attempt counts as failed.
func TestAWebhookRedirectIsNotFollowed(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks))
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(target.Close)
	var redirected atomic.Int32
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		http.Redirect(w, r, target.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "redir-1", Url: redirector.URL + "/hook", Enabled: true}})); err != nil {
		t.Fatal(err)
	}
	e.publish("confirmed", order("redir-1", 1), nil)
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if redirected.Load() < 2 {
			return fmt.Errorf("the vendor's endpoint was tried %d times; want it retried", redirected.Load())
		}
		return nil
	})
	if n := elsewhere.Load(); n > 0 {
		t.Fatalf("the dispatcher followed the redirect: %d ticket(s) sent where it pointed", n)
	}
}

// The janitor keeps every table to the retention: a vendor event (an idempotency record, one
// per in-store sale, return and count) and a dead letter whose ticket is gone are deleted too.
func TestTheJanitorDeletesOldVendorEventsAndDeadLetters(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old := time.Now().Add(-90 * 24 * time.Hour)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := e.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO tickets (store_id, seq, ticket_id, kind, order_id, payload, create_time) VALUES ('jan-1', 1, $1, 'new_order', 'o1', '', $2)`, uuid.NewString(), old)
	exec(`INSERT INTO vendor_events (store_id, vendor_event_id, type, sku, quantity, request, state, receive_time, done_time)
		VALUES ('jan-1', 'ev-old', 'sale', 'LATTE-16', 1, '', 'applied', $1, $1), ('jan-1', 'ev-new', 'sale', 'LATTE-16', 1, '', 'applied', now(), now())`, old)
	exec(`INSERT INTO webhook_deliveries (id, store_id, ticket_id, state, attempts, create_time, done_time)
		VALUES ($1, 'jan-1', $2, 'failed', 8, $3, $3), ($4, 'jan-1', $5, 'failed', 8, now(), now())`, uuid.NewString(), uuid.NewString(), old, uuid.NewString(), uuid.NewString())
	e.restart() // the janitor runs as the adapter starts
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var tickets, vendor, dead int
		if err := e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tickets), (SELECT count(*) FROM vendor_events),
			(SELECT count(*) FROM webhook_deliveries)`).Scan(&tickets, &vendor, &dead); err != nil {
			return err
		}
		if tickets != 0 || vendor != 1 || dead != 1 {
			return fmt.Errorf("%d tickets, %d vendor events, %d dead letters left; want 0, 1, 1 (the recent ones)", tickets, vendor, dead)
		}
		return nil
	})
}

// A till that was offline sends its backlog out of order. Each event applies as of when it
// happened (occurred_at): the count keeps the sale recorded after it was taken, and a sale from
// before the count, in it already, is not taken off again.
func TestVendorEventsArrivingOutOfOrderApplyAsOfWhenTheyHappened(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-occ", nil)
	secret := e.vendorWebhook("ven-occ")
	now := time.Now()
	post := func(id, typ string, q int32, minutesAgo int, want int32) {
		t.Helper()
		b, _ := json.Marshal(posadapter.VendorEvent{EventID: id, Type: typ, SKU: "LATTE-16", Quantity: q,
			OccurredAt: new(now.Add(-time.Duration(minutesAgo) * time.Minute))})
		if code, out := e.vendorPost("ven-occ", secret, time.Now(), b, nil); code != 200 || out.Status != "applied" {
			t.Fatalf("%s: HTTP %d %+v; want applied", id, code, out)
		}
		if got := s.onHand(t, "ven-occ", "LATTE-16"); got != want {
			t.Fatalf("after %s: on hand %d, want %d", id, got, want)
		}
	}
	post("count-an-hour-ago", "count", 20, 60, 20)
	post("sale-10-min-ago", "sale", 2, 10, 18)
	post("count-20-min-ago", "count", 17, 20, 15) // taken before that sale: 17 - 2
	post("sale-30-min-ago", "sale", 1, 30, 15)    // in the count already
	post("sale-just-now", "sale", 1, 0, 14)

	// An event id used again for a sale at another time is another sale: refused as a reused
	// id, not answered as a duplicate (which would drop it).
	b, _ := json.Marshal(posadapter.VendorEvent{EventID: "sale-10-min-ago", Type: "sale", SKU: "LATTE-16", Quantity: 2,
		OccurredAt: new(now.Add(-3 * time.Minute))})
	if code, out := e.vendorPost("ven-occ", secret, time.Now(), b, nil); code != 409 || out.Status != "refused" {
		t.Fatalf("an event id reused for a sale at another time: HTTP %d %+v; want 409 refused", code, out)
	}

	// One recorded without a time (by a copy from before occurred_at was known) is the same
	// event when it comes again with one: a duplicate, not a reused id.
	untimed, _ := json.Marshal(posadapter.VendorEvent{EventID: "sale-untimed", Type: "sale", SKU: "LATTE-16", Quantity: 1})
	if code, out := e.vendorPost("ven-occ", secret, time.Now(), untimed, nil); code != 200 || out.Status != "applied" {
		t.Fatalf("a sale without a time: HTTP %d %+v; want applied", code, out)
	}
	b, _ = json.Marshal(posadapter.VendorEvent{EventID: "sale-untimed", Type: "sale", SKU: "LATTE-16", Quantity: 1, OccurredAt: &now})
	if code, out := e.vendorPost("ven-occ", secret, time.Now(), b, nil); code != 200 || out.Status != "duplicate" {
		t.Fatalf("the same sale again with its time: HTTP %d %+v; want a duplicate", code, out)
	}

	b, _ = json.Marshal(posadapter.VendorEvent{EventID: "sale-tomorrow", Type: "sale", SKU: "LATTE-16", Quantity: 1,
		OccurredAt: new(now.Add(24 * time.Hour))})
	if code, out := e.vendorPost("ven-occ", secret, time.Now(), b, nil); code != 422 || !strings.Contains(out.Error, "future") {
		t.Fatalf("a sale from tomorrow: HTTP %d %+v; want 422 saying it is in the future", code, out)
	}
	if got := s.onHand(t, "ven-occ", "LATTE-16"); got != 13 {
		t.Fatalf("after a refused event: on hand %d, want 13", got)
	}
}

// occurred_at is given or not by its presence: 0001-01-01T00:00:00Z (Go's zero time) is an
// instant like any other. A count then is refused as too old, naming the field, as one a second
// later is (it was applied as a count taken now), and a sale then happened before the last
// count, in it already (it was taken off as a sale now).
func TestAVendorEventAtTheZeroInstantIsOfThatTimeNotUndated(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-zero", nil)
	secret := e.vendorWebhook("ven-zero")
	post := func(body string) (int, posadapter.VendorResult) {
		t.Helper()
		return e.vendorPost("ven-zero", secret, time.Now(), []byte(body), nil)
	}
	if code, out := post(`{"event_id":"count-now","type":"count","sku":"LATTE-16","quantity":20}`); code != 200 || out.Status != "applied" {
		t.Fatalf("a count now: HTTP %d %+v; want applied", code, out)
	}
	for _, at := range []string{"0001-01-01T00:00:01Z", "0001-01-01T00:00:00Z"} {
		code, out := post(`{"event_id":"count-` + at + `","type":"count","sku":"LATTE-16","quantity":5,"occurred_at":"` + at + `"}`)
		if code != 422 || out.Status != "refused" || !strings.HasPrefix(out.Error, "occurred_at: ") || !strings.Contains(out.Error, "ago") {
			t.Fatalf("a count at %s: HTTP %d %+v; want 422 refused as too old, naming occurred_at (the event's field, not inventory's)", at, code, out)
		}
		if got := s.onHand(t, "ven-zero", "LATTE-16"); got != 20 {
			t.Fatalf("after a count at %s: on hand %d, want 20 (unchanged)", at, got)
		}
	}
	if code, out := post(`{"event_id":"sale-year-1","type":"sale","sku":"LATTE-16","quantity":1,"occurred_at":"0001-01-01T00:00:00Z"}`); code != 200 || out.Status != "applied" {
		t.Fatalf("a sale at 0001-01-01T00:00:00Z: HTTP %d %+v; want applied", code, out)
	}
	if got := s.onHand(t, "ven-zero", "LATTE-16"); got != 20 {
		t.Fatalf("after a sale at 0001-01-01T00:00:00Z, before the last count: on hand %d, want 20 (in the count already)", got)
	}
}

// A store's webhook URL may carry secrets: a failed delivery's last error, listed to operators
// and logged, names the vendor by scheme://host, says what went wrong, and quotes none of them,
// not even where the vendor's answer echoes its path.
func TestAFailedDeliveryKeepsTheWebhookURLsSecretsOut(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Cannot POST "+r.URL.RequestURI()+" (token "+r.URL.Query().Get("token")+")", http.StatusNotFound)
	}))
	defer echo.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()                                         // nothing listens there now
	secrets := []string{"PATHSECRET123", "QUERYSECRET456"} // credentials in the URL are refused at SetStoreWebhook
	e := newEnv(t, withConfig(fastWebhooks))
	for store, c := range map[string]struct{ base, says string }{
		"leak-1": {closed.URL, "connection refused"},
		"leak-2": {echo.URL, "HTTP 404"},
	} {
		target := c.base + "/hooks/PATHSECRET123?token=QUERYSECRET456"
		if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: store, Url: target, Enabled: true, Kinds: []posv1.TicketKind{posv1.TicketKind_TICKET_KIND_NEW_ORDER}}})); err != nil {
			t.Fatal(err)
		}
		e.publish("confirmed", order(store, 1), nil)
		var failed []*posv1.FailedDelivery
		testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: store}))
			if err != nil {
				return err
			}
			if failed = res.Msg.GetDeliveries(); len(failed) != 1 {
				return fmt.Errorf("%d dead letters, want 1", len(failed))
			}
			return nil
		})
		last := failed[0].GetLastError()
		host := strings.TrimPrefix(c.base, "http://")
		if !strings.Contains(last, c.says) || !strings.Contains(last, host) {
			t.Errorf("%s: last error %q; want what went wrong (%s) and the vendor's host", store, last, c.says)
		}
		for _, s := range secrets {
			if strings.Contains(last, s) {
				t.Errorf("%s: last error %q quotes the URL's secret %q", store, last, s)
			}
		}
	}
}

// blackHole is a vendor's endpoint that, while down, takes each request and never answers
// (as when packets are dropped): the sender waits for its whole timeout. Up, it is the vendor
// POS behind it.
type blackHole struct {
	pos  *vendorPOS
	down atomic.Bool
	held atomic.Int64 // requests taken and not answered
}

func newBlackHole(t testing.TB) (*blackHole, string) {
	b := &blackHole{pos: &vendorPOS{t: t, attempts: map[string][]time.Time{}, delivered: map[string]*posv1.Ticket{},
		status: func(int) int { return http.StatusOK }}}
	b.down.Store(true)
	closed := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.down.Load() {
			b.held.Add(1)
			_, _ = io.Copy(io.Discard, r.Body) // so that the server sees the sender hang up
			select {
			case <-r.Context().Done(): // the sender gave up
			case <-closed:
			}
			return
		}
		b.pos.serve(w, r)
	}))
	t.Cleanup(func() { close(closed); srv.Close() })
	return b, srv.URL + "/handoff"
}

// A store whose endpoint never answers, with many deliveries pending, backs off as a whole:
// one delivery at a time tries it, about once per backoff, instead of each delivery holding a
// send slot for the whole timeout about once per backoff, which kept every slot busy and held
// up every other store's deliveries. Another store's tickets still go out at once, with two
// adapter copies side by side as with one; when the endpoint answers again, the store gets
// all of its tickets.
func TestAStoreWhoseEndpointNeverAnswersDoesNotHoldUpOtherStores(t *testing.T) {
	const (
		timeout    = time.Second
		maxBackoff = 500 * time.Millisecond
		pending    = 100
		live       = 10
	)
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		c.WebhookTimeout = timeout
		c.WebhookBackoff = 100 * time.Millisecond
		c.WebhookMaxBackoff = maxBackoff
		c.WebhookGiveUpAfter = time.Minute
		c.WebhookPollInterval = 20 * time.Millisecond
	}))
	e.startCopy()
	hole, holeURL := newBlackHole(t)
	vendor, vendorURL := newVendorPOS(t)
	for store, v := range map[string]struct {
		pos *vendorPOS
		url string
	}{"hole-1": {hole.pos, holeURL}, "alive-1": {vendor, vendorURL}} {
		res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: store, Url: v.url, Enabled: true}}))
		if err != nil {
			t.Fatal(err)
		}
		v.pos.setSecret(res.Msg.GetSigningSecret())
	}
	for i := range pending {
		e.publish("confirmed", order("hole-1", i), nil)
	}
	e.waitTickets("hole-1", pending)
	time.Sleep(2 * timeout) // every delivery of the store has been tried, or is waiting to be

	held := hole.held.Load()
	start := time.Now()
	for i := range live {
		e.publish("confirmed", order("alive-1", i), nil)
	}
	testenv.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := len(vendor.deliveredKinds()); n != live {
			return fmt.Errorf("the other store's vendor has %d of its %d tickets", n, live)
		}
		return nil
	})
	took := time.Since(start)
	time.Sleep(max(0, 3*time.Second-took))
	window := time.Since(start)
	tries := hole.held.Load() - held
	t.Logf("the other store's %d tickets took %v; the endpoint that never answers was tried %d times in %v", live, took, tries, window)
	if took > time.Second {
		t.Errorf("the other store's %d tickets took %v to go out; want them promptly, not behind the deliveries that wait for a timeout", live, took)
	}
	// A try takes the timeout, then the store waits its backoff (at most maxBackoff): about
	// one try per timeout and backoff, not one per delivery (about 30 a second here).
	if limit := int64(window/timeout) + 2; tries > limit {
		t.Errorf("the endpoint that never answers was tried %d times in %v; want at most %d, about one per timeout and backoff", tries, window, limit)
	}

	hole.down.Store(false)
	testenv.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := len(hole.pos.deliveredKinds()); n != pending {
			return fmt.Errorf("the store back has %d of its %d tickets", n, pending)
		}
		return nil
	})
	// The vendor has them all; the last outcomes are written just after.
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		var waiting int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'`).Scan(&waiting); err != nil || waiting != 0 {
			return fmt.Errorf("%d deliveries still pending (%v); want none", waiting, err)
		}
		return nil
	})
	res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{}))
	if err != nil || len(res.Msg.GetDeliveries()) != 0 {
		t.Fatalf("dead letters: %v, %v; want none", res, err)
	}
}

// A delivery in flight when another of its store's deliveries fails can be kept as a dead
// letter meanwhile: the failure puts the store in backoff and its pending deliveries past their
// give-up time become dead letters, the one in flight among them when its claim ends before the
// store's wait does. When the vendor then takes it, it is delivered, not a dead letter an
// operator would be asked to replay (it used to stay one: the outcome only updated a row
// still pending).
func TestADeliveryTakenWhileItWasKeptAsADeadLetterIsDelivered(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		c.WebhookTimeout = 2 * time.Second                               // a claim's lease is 32 s...
		c.WebhookBackoff, c.WebhookMaxBackoff = time.Minute, time.Minute // ...and the store's wait 48–72 s
		c.WebhookGiveUpAfter = 300 * time.Millisecond
	}))
	var (
		arrived atomic.Int32
		held    atomic.Value // the ticket id of the delivery held in flight
	)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch arrived.Add(1) {
		case 1: // in flight until the test lets it be taken
			held.Store(r.Header.Get(posadapter.TicketIDHeader))
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		case 2: // fails past its give-up time: the store backs off
			time.Sleep(500 * time.Millisecond)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "flaky-1", Url: srv.URL + "/handoff", Enabled: true}})); err != nil {
		t.Fatal(err)
	}
	e.publish("confirmed", order("flaky-1", 1), nil)
	e.publish("confirmed", order("flaky-1", 2), nil)

	state := func() (string, error) {
		id, _ := held.Load().(string)
		if id == "" {
			return "", fmt.Errorf("no delivery held yet")
		}
		var s string
		err := e.pool.QueryRow(context.Background(), `SELECT state FROM webhook_deliveries WHERE ticket_id = $1`, id).Scan(&s)
		return s, err
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s, err := state(); err != nil || s != "failed" {
			return fmt.Errorf("the delivery in flight is %q (%v); want it kept as a dead letter by the other's failure", s, err)
		}
		return nil
	})
	close(release)
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s, err := state(); err != nil || s != "delivered" {
			return fmt.Errorf("the delivery the vendor took is %q (%v); want delivered", s, err)
		}
		return nil
	})
	res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "flaky-1"}))
	if err != nil || len(res.Msg.GetDeliveries()) != 1 {
		t.Fatalf("dead letters %v, %v; want the one that failed only", res, err)
	}
}

// Two adapter copies recording outcomes can deadlock: one copy's statement locks the rows of
// its batch as its plan meets them, while another's backoff puts off every pending delivery of
// a store, among them the first copy's in flight. Postgres aborts one; its outcomes must be
// written at once, not left claimed until the lease lapses and then sent again.
func TestAnOutcomeWriteLostToADeadlockIsWrittenAgainAtOnce(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		c.WebhookTimeout = 2 * time.Second                               // a claim's lease is 32 s
		c.WebhookBackoff, c.WebhookMaxBackoff = time.Minute, time.Minute // the store's wait 48–72 s
	}))
	ctx := context.Background()
	var arrived atomic.Int32
	fail, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if arrived.Add(1) == 1 {
			<-fail
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		select { // the second stays in flight: pending, claimed, put off by the backoff
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	if _, err := e.admin().SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "locked-1", Url: srv.URL + "/handoff", Enabled: true}})); err != nil {
		t.Fatal(err)
	}
	e.publish("confirmed", order("locked-1", 1), nil)
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := arrived.Load(); n != 1 {
			return fmt.Errorf("%d deliveries at the vendor, want 1", n)
		}
		return nil
	})
	e.publish("confirmed", order("locked-1", 2), nil)
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := arrived.Load(); n != 2 {
			return fmt.Errorf("%d deliveries at the vendor, want 2", n)
		}
		return nil
	})
	var first, second string
	if err := e.pool.QueryRow(ctx, `SELECT
		(SELECT d.id::text FROM webhook_deliveries d JOIN tickets t USING (ticket_id) WHERE d.store_id = 'locked-1' ORDER BY t.seq LIMIT 1),
		(SELECT d.id::text FROM webhook_deliveries d JOIN tickets t USING (ticket_id) WHERE d.store_id = 'locked-1' ORDER BY t.seq DESC LIMIT 1)`).
		Scan(&first, &second); err != nil {
		t.Fatal(err)
	}

	// The other copy: it holds the second delivery, and will want the first.
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	other, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback(ctx) }()
	// The recorder's own deadlock check runs first, so it is the one aborted.
	if _, err := other.Exec(ctx, `SET LOCAL deadlock_timeout = '30s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR UPDATE`, second); err != nil {
		t.Fatal(err)
	}
	close(fail)
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var waiting int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil || waiting != 1 {
			return fmt.Errorf("%d sessions waiting for a lock (%v); want the recorder's backoff, waiting for the second delivery", waiting, err)
		}
		return nil
	})
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := other.Exec(wctx, `UPDATE webhook_deliveries SET last_error = last_error WHERE id = $1`, first); err != nil {
		t.Fatalf("the other copy's update: %v; want the recorder's transaction aborted as the deadlock's victim", err)
	}
	if err := other.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		var lastError string
		var backingOff bool
		if err := e.pool.QueryRow(ctx, `SELECT d.last_error, w.retry_time IS NOT NULL FROM webhook_deliveries d
			JOIN store_webhooks w USING (store_id) WHERE d.id = $1`, first).Scan(&lastError, &backingOff); err != nil {
			return err
		}
		if lastError == "" || !backingOff {
			return fmt.Errorf("the failed attempt is not written (last error %q, store backing off %v); want it written again at once, not after the 32 s lease", lastError, backingOff)
		}
		return nil
	})
	if n := arrived.Load(); n != 2 {
		t.Errorf("the vendor got %d deliveries; want the 2 made, none sent again", n)
	}
}

// A delivery id in a form uuid.Parse takes and Postgres refuses (urn:uuid:…) is bad input:
// InvalidArgument naming delivery_id, or NotFound; never Internal.
func TestADeliveryIDSpeltAsAURNIsLookedUpNotAnInternalError(t *testing.T) {
	e := newEnv(t)
	id := "urn:uuid:" + uuid.NewString()
	_, err := e.admin().ReplayDelivery(context.Background(), connect.NewRequest(&posv1.ReplayDeliveryRequest{DeliveryId: id}))
	if c := codeOf(err); c != connect.CodeInvalidArgument && c != connect.CodeNotFound {
		t.Fatalf("ReplayDelivery(%q) = %v; want InvalidArgument naming delivery_id, or NotFound", id, err)
	}
}

// A page token the adapter's own checks pass (it re-encodes to itself and its id parses as a
// UUID) but whose id Postgres refuses is bad input naming page_token, never Internal.
func TestAPageTokenWithAURNSpeltIDIsRefusedNamingPageToken(t *testing.T) {
	e := newEnv(t)
	req := &posv1.ListFailedDeliveriesRequest{}
	req.PageToken = pagetoken.Encode(req, struct {
		Time time.Time `json:"t"`
		ID   string    `json:"id"`
	}{time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), "urn:uuid:" + uuid.NewString()})
	_, err := e.admin().ListFailedDeliveries(context.Background(), connect.NewRequest(req))
	if c := codeOf(err); c != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "page_token") {
		t.Fatalf("ListFailedDeliveries with a urn:uuid token = %v; want InvalidArgument naming page_token", err)
	}
}
