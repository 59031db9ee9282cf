package posadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/testenv"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// deadLetter makes one dead letter for store, whose endpoint refuses every delivery, and
// returns its id and the endpoint's URL.
func deadLetter(t *testing.T, e *env, store string) (string, string) {
	t.Helper()
	vendor, url := newVendorPOS(t)
	vendor.setStatus(func(int) int { return http.StatusInternalServerError })
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: store, Url: url, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	e.publish("confirmed", order(store, 1), nil)
	var id string
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: store}))
		if err != nil || len(res.Msg.GetDeliveries()) != 1 {
			return fmt.Errorf("no dead letter yet (%v)", err)
		}
		id = res.Msg.GetDeliveries()[0].GetId()
		return nil
	})
	return id, url
}

// replayRefused replays id, wants FailedPrecondition naming why, and the dead letter kept.
func replayRefused(t *testing.T, e *env, id, why string) {
	t.Helper()
	_, err := e.admin().ReplayDelivery(context.Background(), req(&posv1.ReplayDeliveryRequest{DeliveryId: id}))
	time.Sleep(500 * time.Millisecond) // time for the dispatcher to drop it, were it pending
	var state string
	if err := e.pool.QueryRow(context.Background(), `SELECT state FROM webhook_deliveries WHERE id = $1`, id).Scan(&state); err != nil {
		t.Fatal(err)
	}
	t.Logf("ReplayDelivery: %v; the delivery is now %q", err, state)
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), why) || state != "failed" {
		t.Fatalf("ReplayDelivery: %v, delivery %q; want FailedPrecondition naming %q and the dead letter kept", err, state, why)
	}
}

// A dead letter of a store whose webhook is disabled since would be dropped unsent by the
// dispatcher: its replay is refused, saying why, and the dead letter is kept.
func TestReplayingADeadLetterOfADisabledWebhookIsRefusedNotDropped(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks))
	id, url := deadLetter(t, e, "dead-e9")
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "dead-e9", Url: url, Enabled: false}})); err != nil {
		t.Fatal(err)
	}
	replayRefused(t, e, id, "disabled")
}

// The same for a webhook narrowed since to kinds the dead letter's ticket is not of.
func TestReplayingADeadLetterOfAKindNoLongerWantedIsRefusedNotDropped(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks))
	id, url := deadLetter(t, e, "dead-kind")
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "dead-kind", Url: url, Enabled: true,
			Kinds: []posv1.TicketKind{posv1.TicketKind_TICKET_KIND_ESCALATION}}})); err != nil {
		t.Fatal(err)
	}
	replayRefused(t, e, id, "kinds")
}
