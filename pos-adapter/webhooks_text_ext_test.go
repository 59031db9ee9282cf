package posadapter_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// A failed delivery's error is kept as its last_error, in Postgres: whatever text it carries of
// the vendor's, it must be recorded, backed off and, its time up, kept as a dead letter, as for
// any vendor. Two vendors test it: one whose host is an internationalised name (its Unicode
// form, 507 bytes, named in the error, is cut at 500, inside a character), down; and one
// answering 500 with a NUL in its body. Either made the recorder's statement fail (SQLSTATE
// 22021), so the delivery was never recorded, never given up, and sent again each claim lease.
func TestFailedDeliveriesAreRecordedWhateverTextTheVendorsErrorHolds(t *testing.T) {
	label := strings.Repeat("中", 55) // 61 characters as an A-label: a valid DNS name
	idnHost := label + "." + label + "." + label + ".cn"
	nul := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("upstream \x00 failed"))
	}))
	t.Cleanup(nul.Close)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if strings.HasPrefix(addr, "xn--") { // the IDN vendor, resolved and down
			return nil, errors.New("connect: connection refused")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		fastWebhooks(c) // given up after 1 s
		c.WebhookClient = &http.Client{Transport: tr}
	}))
	for store, url := range map[string]string{"idn-1": "https://" + idnHost + "/hook", "nul-1": nul.URL} {
		if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: store, Url: url, Enabled: true}})); err != nil {
			t.Fatalf("SetStoreWebhook(%s): %v", url, err)
		}
		e.publish("confirmed", order(store, 1), nil)
	}

	testenv.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, store := range []string{"idn-1", "nul-1"} {
			var attempts int
			var lastErr, state string
			if err := e.pool.QueryRow(context.Background(), `SELECT attempts, last_error, state FROM webhook_deliveries WHERE store_id = $1`,
				store).Scan(&attempts, &lastErr, &state); err != nil {
				return err
			}
			if state != "failed" || attempts == 0 || lastErr == "" {
				return errors.New(store + "'s delivery is " + state + ", last error " + lastErr + "; want it recorded and given up")
			}
		}
		return nil
	})
	for _, store := range []string{"idn-1", "nul-1"} {
		res, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: store}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.GetDeliveries()) != 1 {
			t.Errorf("%s: %d dead letters, want 1", store, len(res.Msg.GetDeliveries()))
		}
	}
}
