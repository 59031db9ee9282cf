package posadapter_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// When many stores' endpoints hang at once (one vendor's cloud is down, and all its stores
// point at it), their probes each hold a send slot for the whole timeout. With more such stores
// than send slots, a healthy store's tickets must still go out promptly: probes may hold only
// part of the slots.
func TestManyHangingStoresDoNotStarveAHealthyStore(t *testing.T) {
	const (
		timeout = time.Second
		holes   = 48
		live    = 5
	)
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		c.WebhookTimeout = timeout
		c.WebhookBackoff = 100 * time.Millisecond
		c.WebhookMaxBackoff = 500 * time.Millisecond
		c.WebhookGiveUpAfter = time.Minute
		c.WebhookPollInterval = 20 * time.Millisecond
	}))
	hole, holeURL := newBlackHole(t)
	vendor, vendorURL := newVendorPOS(t)
	for i := range holes {
		store := fmt.Sprintf("hang-%d", i)
		res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: store, Url: holeURL, Enabled: true}}))
		if err != nil {
			t.Fatal(err)
		}
		hole.pos.setSecret(res.Msg.GetSigningSecret())
	}
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "alive-e", Url: vendorURL, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	for i := range holes {
		e.publish("confirmed", order(fmt.Sprintf("hang-%d", i), 1), nil)
	}
	for i := range holes {
		e.waitTickets(fmt.Sprintf("hang-%d", i), 1)
	}
	time.Sleep(3 * timeout) // every hanging store has failed once and is probing

	start := time.Now()
	for i := range live {
		e.publish("confirmed", order("alive-e", i), nil)
	}
	var took time.Duration
	testenv.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := len(vendor.deliveredKinds()); n != live {
			return fmt.Errorf("the healthy store's vendor has %d of its %d tickets", n, live)
		}
		took = time.Since(start)
		return nil
	})
	t.Logf("healthy store's %d tickets took %v with %d stores hanging; hanging endpoint tried %d times", live, took, holes, hole.held.Load())
	if took > 2*time.Second {
		t.Errorf("the healthy store's %d tickets took %v to go out while %d other stores' endpoints hang; want them promptly (the 1-store case takes well under 1s)", live, took, holes)
	}
}

// A vendor that answers every delivery, only slowly (here 1 s, well inside the 10 s timeout),
// never puts its store in backoff; its backlog must not hold every send slot, so another
// store's tickets go out without waiting for that backlog to drain.
func TestASlowButAnsweringVendorDoesNotHoldUpOtherStores(t *testing.T) {
	const (
		backlog = 160
		live    = 5
	)
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.WebhookPollInterval = 20 * time.Millisecond }))
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(time.Second)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(slow.Close)
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "slow-e", Url: slow.URL + "/h", Enabled: true}})); err != nil {
		t.Fatal(err)
	}
	vendor, vendorURL := newVendorPOS(t)
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "alive-e1b", Url: vendorURL, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	for i := range backlog {
		e.publish("confirmed", order("slow-e", i), nil)
	}
	e.waitTickets("slow-e", backlog)
	start := time.Now()
	for i := range live {
		e.publish("confirmed", order("alive-e1b", i), nil)
	}
	var took time.Duration
	testenv.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := len(vendor.deliveredKinds()); n != live {
			return fmt.Errorf("the healthy store's vendor has %d of its %d tickets", n, live)
		}
		took = time.Since(start)
		return nil
	})
	t.Logf("healthy store's %d tickets took %v behind a slow vendor's backlog of %d", live, took, backlog)
	if took > 2*time.Second {
		t.Errorf("the healthy store's %d tickets took %v behind another store's slow (1 s, answering) vendor; want them promptly", live, took)
	}
}
