package posadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// webhookOutcomes is handoff_pos_webhook_deliveries_total by outcome: what an operator can
// graph and alert on of the deliveries to vendor POS webhooks.
func webhookOutcomes(t *testing.T) map[string]float64 {
	t.Helper()
	return testenv.CounterSums(t, "handoff_pos_webhook_deliveries_total", nil, "outcome")
}

// A store's vendor POS that refuses every ticket gets none for as long as the deliveries are
// retried (72 h in production), then they become dead letters: the store prepares none of
// those orders. handoff_pos_webhooks_late_seconds stays at 0 all along (a refused delivery is
// due later), so /metrics must show the failures themselves, as it does for customer
// notifications (handoff_notify_deliveries_total{outcome="retry"|"dead"}); otherwise nothing
// but a warning in the log tells an operator, and no alert can.
func TestFailedWebhookDeliveriesAndDeadLettersAreCountedOnMetrics(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks))
	vendor, url := newVendorPOS(t)
	vendor.setStatus(func(int) int { return http.StatusInternalServerError })
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "metrics-dead-1", Url: url, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	before := webhookOutcomes(t)
	e.publish("confirmed", order("metrics-dead-1", 1), nil)

	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "metrics-dead-1"}))
		if err != nil {
			return err
		}
		if n := len(res.Msg.GetDeliveries()); n != 1 {
			return fmt.Errorf("%d dead letters, want 1", n)
		}
		return nil
	})
	after := webhookOutcomes(t)
	if after["dead"] <= before["dead"] {
		t.Errorf("a webhook delivery became a dead letter, yet no handoff_pos_webhook… counter on /metrics counted an outcome \"dead\" (before %v, after %v)", before, after)
	}
	if after["retry"] <= before["retry"] {
		t.Errorf("webhook deliveries failed and were retried, yet no handoff_pos_webhook… counter on /metrics counted an outcome \"retry\" (before %v, after %v)", before, after)
	}
}
