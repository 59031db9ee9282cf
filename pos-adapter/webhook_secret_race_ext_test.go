package posadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// Two first SetStoreWebhook calls for a store at once (an operator's tool retrying, two
// admins) must not both hand out a secret "shown only here" of which only one is stored: every
// secret handed out is the store's, and signs events the adapter takes.
func TestConcurrentFirstSetStoreWebhookReturnsOnlyTheStoredSecret(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "ven-e8", map[string]int32{"LATTE-16": 10})
	const n = 8
	secrets := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
				Webhook: &posv1.StoreWebhook{StoreId: "ven-e8", Url: "https://pos.vendor.example/handoff"}}))
			if err == nil {
				secrets[i] = res.Msg.GetSigningSecret()
			}
		})
	}
	close(start)
	wg.Wait()
	var handed []string
	for _, sec := range secrets {
		if sec != "" {
			handed = append(handed, sec)
		}
	}
	if len(handed) == 0 {
		t.Fatalf("%d concurrent first calls handed out no secret at all", n)
	}
	rejected := 0
	for i, sec := range handed {
		code, _ := e.vendorPost("ven-e8", sec, time.Now(), vendorEvent(fmt.Sprintf("c-%d", i), "return", "LATTE-16", 1), nil)
		if code == http.StatusUnauthorized {
			rejected++
		}
	}
	t.Logf("%d concurrent first calls handed out %d secrets; %d of them are refused", n, len(handed), rejected)
	if rejected > 0 {
		t.Fatalf("%d of the %d signing secrets SetStoreWebhook returned are not the store's: their holders' events are refused (401)", rejected, len(handed))
	}
}
