package notify_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// Shutdown mid-send: the interrupted send is handed over uncounted and another copy sends it
// promptly.
func TestShutdownMidSendHandsOverToAnotherCopy(t *testing.T) {
	pool := newPool(t)
	var calls atomic.Int64
	release := make(chan struct{})
	url := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer close(release)
	cfgA := fastConfig(webhookSender(t, url))
	cfgA.Logger = testenv.Logger(t)
	a := notify.NewDispatcher(pool, cfgA)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-shut")})
	id := notificationIDs(t, pool, "ord-shut", notify.ChannelWebhook)[0]
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if calls.Load() < 1 {
			return fmt.Errorf("not sent yet")
		}
		return nil
	})
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("Run returned %s after cancel", time.Since(start))
	s, att := stateOf(t, pool, id)
	t.Logf("after shutdown: %s, %d attempts", s, att)
	startDispatcher(t, pool, fastConfig(webhookSender(t, url)))
	testenv.CheckFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		if s, _ := stateOf(t, pool, id); s != "sent" {
			return fmt.Errorf("%s", s)
		}
		return nil
	})
}
