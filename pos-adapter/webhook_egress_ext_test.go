package posadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/testenv"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// A webhook URL is set through the admin API, so it must not reach what only Handoff can: its
// own ports on loopback, the cluster's private addresses, cloud metadata. Such a URL is refused
// when set, naming webhook.url; one stored while its network was allowed is refused at each
// connection once it is not, and the vendor endpoint there never hears of the ticket.
func TestAWebhookCannotReachAnAddressBehindHandoff(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks)) // loopback allowed, as in development
	var reached atomic.Int32
	inner := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Add(1) }))
	t.Cleanup(inner.Close)
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "inner-1", Url: inner.URL + "/hook", Enabled: true}})); err != nil {
		t.Fatalf("a loopback webhook with loopback allowed: %v", err)
	}

	e.stopAdapter()
	e.cfg.WebhookAllowNetworks = nil // production: public addresses only
	e.start()

	e.publish("confirmed", order("inner-1", 1), nil)
	var failed []*posv1.FailedDelivery
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "inner-1"}))
		if err != nil {
			return err
		}
		if failed = res.Msg.GetDeliveries(); len(failed) != 1 {
			return fmt.Errorf("%d dead letters, want 1", len(failed))
		}
		return nil
	})
	if msg := failed[0].GetLastError(); !strings.Contains(msg, "127.0.0.1 is not a public address") || !strings.Contains(msg, "HANDOFF_WEBHOOK_ALLOW_NETWORKS") {
		t.Fatalf("the delivery's last error %q; want it to say the address is not public and where networks are allowed", msg)
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the endpoint on loopback was sent %d request(s); want none", n)
	}

	for _, url := range []string{
		inner.URL + "/hook",
		"http://localhost:9000/hook",
		"https://169.254.169.254/latest/meta-data/iam",
		"https://10.0.0.5/hook",
		"https://192.168.1.20:8443/hook",
		"https://[::1]/hook",
		"https://[fd00::1]/hook",
		"https://[::ffff:127.0.0.1]/hook",
		"https://0.0.0.0/hook",
		"https://100.100.100.200/latest/meta-data", // CGNAT space, where a cloud keeps its metadata
	} {
		_, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: "inner-2", Url: url, Enabled: true}}))
		if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "webhook.url") || !strings.Contains(err.Error(), "not a public address") {
			t.Fatalf("webhook URL %s: %v; want InvalidArgument naming webhook.url: not a public address", url, err)
		}
	}
	res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: "inner-2"}))
	if err != nil || len(res.Msg.GetDeliveries()) != 0 {
		t.Fatalf("dead letters of a store whose webhooks were all refused: %v, %v; want none", res, err)
	}
	// A name is looked up when connected to, not when set.
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "inner-3", Url: "https://pos.vendor.example/hook", Enabled: true}})); err != nil {
		t.Fatalf("a webhook naming a host: %v", err)
	}
}

// The networks an operator allows are reached: a vendor POS on the retailer's own network.
func TestAWebhookReachesANetworkTheOperatorAllows(t *testing.T) {
	e := newEnv(t, withConfig(fastWebhooks)) // 127.0.0.0/8 allowed
	vendor, url := newVendorPOS(t)
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "lan-1", Url: url, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	e.publish("confirmed", order("lan-1", 1), nil)
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if k := vendor.deliveredKinds(); len(k) != 1 {
			return fmt.Errorf("vendor has %v, want the new order", k)
		}
		return nil
	})
}
