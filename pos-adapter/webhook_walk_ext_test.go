package posadapter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// A vendor down for more stores than a round of the dispatcher walks (hundreds of stores on
// one vendor's cloud, each with tickets pending and its endpoint in backoff) does not keep the
// dispatcher claiming without a pause: before, every round's walk came back full and due at
// once, a statement every 10 ms for as long as the outage lasted. A healthy store further on
// in the walk still gets its tickets promptly.
func TestHundredsOfStoresInBackoffDoNotKeepTheDispatcherClaiming(t *testing.T) {
	e, vendor := healthyStoreBesideStoresInBackoff(t, 300)

	before := metricValue(t, "handoff_pos_webhook_rounds_total", "", "")
	start := time.Now()
	e.publish("confirmed", order("zz-alive", 1), nil)
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(vendor.deliveredKinds()); n != 1 {
			return fmt.Errorf("the healthy store's vendor has %d tickets", n)
		}
		return nil
	})
	t.Logf("the healthy store's ticket went out %v after it was raised, behind 300 stores in backoff", time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	rounds := metricValue(t, "handoff_pos_webhook_rounds_total", "", "") - before
	t.Logf("%.0f rounds in %v", rounds, time.Since(start).Round(time.Millisecond))
	if rounds > 25 {
		t.Fatalf("%.0f claiming rounds in %v with nothing to send but 300 stores in backoff; want a pause between fruitless walks",
			rounds, time.Since(start).Round(time.Millisecond))
	}
}

// A healthy store with a run of tickets beside a thousand stores in backoff is not held to
// its share of sends per lap of them: once a send of its ends while it is at its share, the
// next round starts at it, not where the walk had got to. Before, each of its four sends at a
// time waited for a lap of four walks that found nothing, paused 250 ms each.
func TestABusyStoreBesideAThousandStoresInBackoffIsNotThrottled(t *testing.T) {
	e, vendor := healthyStoreBesideStoresInBackoff(t, 1000)

	const n = 24
	start := time.Now()
	for i := range n {
		e.publish("confirmed", order("zz-alive", i+1), nil)
	}
	// The first ones wait for the walk to reach the store (a lap of the stores in backoff, a
	// pause per 256 of them); the rest go as fast as the vendor answers.
	var first time.Time
	testenv.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		got := len(vendor.deliveredKinds())
		if got > 0 && first.IsZero() {
			first = time.Now()
		}
		if got != n {
			return fmt.Errorf("the healthy store's vendor has %d of %d tickets", got, n)
		}
		return nil
	})
	rest := time.Since(first)
	t.Logf("%d tickets of a healthy store: the first %v after they were raised, the rest %v later, beside 1000 stores in backoff",
		n, first.Sub(start).Round(time.Millisecond), rest.Round(time.Millisecond))
	if rest > 2*time.Second {
		t.Fatalf("after its first ticket, a healthy, fast vendor's other %d took %v beside 1000 stores in backoff; want them well under 2 s",
			n-1, rest.Round(time.Millisecond))
	}
}

// healthyStoreBesideStoresInBackoff makes n stores whose webhook endpoint failed, waiting out
// an hour's backoff with a delivery pending each (one vendor's cloud down), and a store after
// them in the walk's order, zz-alive, whose vendor answers.
func healthyStoreBesideStoresInBackoff(t *testing.T, n int) (*env, *vendorPOS) {
	t.Helper()
	var s services
	e := newEnv(t, withServices(&s))
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `INSERT INTO store_webhooks (store_id, url, enabled, signing_secret, retry_time, failures)
		SELECT 'down-' || lpad(i::text, 4, '0'), 'https://pos.vendor.example/handoff', true, 'whsec_down', now() + interval '1 hour', 5
		FROM generate_series(1, $1::int) i`, n); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, store_id, ticket_id)
		SELECT gen_random_uuid(), 'down-' || lpad(i::text, 4, '0'), gen_random_uuid() FROM generate_series(1, $1::int) i`, n); err != nil {
		t.Fatal(err)
	}
	s.addStore(t, "zz-alive", nil)
	vendor, url := newVendorPOS(t)
	res, err := e.admin().SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "zz-alive", Url: url, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	return e, vendor
}
