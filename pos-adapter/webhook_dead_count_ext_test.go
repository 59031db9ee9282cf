package posadapter_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// Two tickets of one store whose vendor POS fails: the first is refused at once, again and
// again, the second's first attempt hangs. When the first is given up (past the give-up time),
// the store's back-off statement (backOffStoresSQL) keeps the second, still in flight and past
// its time too, as a dead letter, and counts it; then the second's own attempt fails and
// deliver counts it dead again. Two dead letters must count 2, not 3: HandoffPOSWebhooksDead
// and any dashboard of dead letters would overstate what an operator has to replay.
func TestADeadLetterIsCountedOnceWhenItsStoreGivesItUpWhileItIsInFlight(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), "-0002-") {
			time.Sleep(1800 * time.Millisecond) // past the give-up time (1 s)
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "dead-once-1", Url: srv.URL + "/handoff", Enabled: true}})); err != nil {
		t.Fatal(err)
	}
	before := webhookOutcomes(t)
	e.publish("confirmed", order("dead-once-1", 1), nil)
	e.publish("confirmed", order("dead-once-1", 2), nil)

	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "dead-once-1"}))
		if err != nil {
			return err
		}
		if n := len(res.Msg.GetDeliveries()); n != 2 {
			return fmt.Errorf("%d dead letters, want 2", n)
		}
		return nil
	})
	time.Sleep(3 * time.Second) // every attempt in flight has ended and been recorded
	after := webhookOutcomes(t)
	if got := after["dead"] - before["dead"]; got != 2 {
		t.Errorf("2 dead letters counted %v times as dead on /metrics", got)
	}
}
