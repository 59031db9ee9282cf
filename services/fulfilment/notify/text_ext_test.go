package notify_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// A receiver's error is kept as the notification's last error whatever text it holds. One that
// answers 4xx with a NUL in its body (which Postgres cannot store) is dead-lettered for an
// operator, as any 4xx is; before, the outcome's write failed, with every outcome written in the
// same statement, and the row was tried again each lease, for ever.
func TestAWebhookErrorHoldingANULIsDeadLettered(t *testing.T) {
	pool := newPool(t)
	srv := http.NewServeMux()
	srv.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("bad request\x00detail"))
	})
	hs := newHTTPServer(t, srv)
	startDispatcher(t, pool, fastConfig(webhookSender(t, hs)))
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-nul")})
	ids := notificationIDs(t, pool, "ord-nul", notify.ChannelWebhook)
	waitForState(t, pool, ids[0], "dead")
}

// A receiver whose status line's reason is not UTF-8 (HTTP allows it): its 503s are retried
// and, after MaxAttempts, dead-lettered.
func TestAWebhookErrorNotInUTF8IsDeadLettered(t *testing.T) {
	pool := newPool(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				req, err := http.ReadRequest(r)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = c.Write([]byte("HTTP/1.1 503 Dienst nicht verf\xfcgbar\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
			}()
		}
	}()
	startDispatcher(t, pool, fastConfig(webhookSender(t, "http://"+ln.Addr().String()+"/hook")))
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-latin1")})
	ids := notificationIDs(t, pool, "ord-latin1", notify.ChannelWebhook)
	waitForState(t, pool, ids[0], "dead")
}

func newHTTPServer(t *testing.T, h http.Handler) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}
