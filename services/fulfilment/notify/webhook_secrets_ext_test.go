package notify_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// A webhook URL's secrets (Slack-style: a token in the path; or in the query string; or a
// password) never reach what a failed send leaves behind: the error stored as last_error and
// listed by ListFailedNotifications, and the logs. The error names the receiver as
// scheme://host and still says what went wrong. (Before, Go's url.Error named the whole URL
// but its password; and a receiver's answer echoing the request line was kept as it came.)
func TestWebhookErrorsLeaveTheURLsSecretsOut(t *testing.T) {
	secrets := []string{"pa55word", "SLACKSECRET", "QUERYSECRET"}
	const target = "/hooks/T000/SLACKSECRET?token=QUERYSECRET"
	withSecrets := func(base string) string {
		return strings.Replace(base, "http://", "http://user:pa55word@", 1) + target
	}
	hanging := func(t *testing.T) string {
		url, _ := hangingWebhook(t)
		return url
	}
	echoing := func(t *testing.T) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			user, pass, _ := r.BasicAuth()
			// The first 256 bytes, the part of an answer an error quotes, end inside the
			// path's token: it must be cut out whole, not left half.
			padding := strings.Repeat(".", 222)
			http.Error(w, fmt.Sprintf("%s Cannot %s %s (%s:%s)", padding, r.Method, r.URL.RequestURI(), user, pass), http.StatusNotFound)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	for _, tc := range []struct {
		name     string
		receiver func(t *testing.T) string // its base URL, http://host:port
		cause    string                    // what the error must still say
	}{
		{"connection refused", func(*testing.T) string { return "http://127.0.0.1:1" }, "connection refused"},
		{"timeout", hanging, "deadline exceeded"},
		{"answer echoing the URL", echoing, "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := newPool(t)
			base := tc.receiver(t)
			sender, err := notify.NewWebhookSender(notify.WebhookConfig{URL: withSecrets(base), Secret: secret, Timeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			logs := &testenv.LockedBuffer{}
			cfg := fastConfig(sender)
			cfg.MaxAttempts = 2 // a retry (logged at debug), then a dead letter (warn)
			cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			startDispatcher(t, pool, cfg)

			enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-secret")})
			id := notificationIDs(t, pool, "ord-secret", notify.ChannelWebhook)[0]
			waitForState(t, pool, id, "dead")

			list, err := adminClient(t, pool).ListFailedNotifications(t.Context(), &fulfilmentv1.ListFailedNotificationsRequest{})
			if err != nil || len(list.GetNotifications()) != 1 {
				t.Fatalf("ListFailedNotifications = %v, %v; want the one dead letter", list, err)
			}
			var stored string
			if err := pool.QueryRow(t.Context(), `SELECT last_error FROM notifications WHERE id = $1`, id).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			for what, text := range map[string]string{
				"ListFailedNotifications' last_error": list.GetNotifications()[0].GetLastError(),
				"the stored last_error":               stored,
				"the logs":                            logs.String(),
			} {
				for _, s := range secrets {
					if strings.Contains(text, s[:6]) {
						t.Errorf("%s gives away %s (or its start):\n%s", what, s, text)
					}
				}
				if !strings.Contains(text, base) || !strings.Contains(text, tc.cause) {
					t.Errorf("%s does not name the receiver %s and say %q:\n%s", what, base, tc.cause, text)
				}
			}
			t.Logf("last_error: %s", stored)
		})
	}
}

// A webhook URL refused at start is not repeated in the error (logged as the process stops).
func TestWebhookConfigErrorsLeaveTheURLsSecretsOut(t *testing.T) {
	for _, url := range []string{
		"ftp://user:pa55word@127.0.0.1/hooks/T000/SLACKSECRET?token=QUERYSECRET",
		"http://user:pa55word@127.0.0.1/hooks/T000/SLACKSECRET%zz?token=QUERYSECRET",
	} {
		_, err := notify.NewWebhookSender(notify.WebhookConfig{URL: url, Secret: secret})
		if err == nil {
			t.Fatalf("webhook URL %s accepted", url)
		}
		for _, s := range []string{"pa55word", "SLACKSECRET", "QUERYSECRET"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("refusing %s, the error gives away %s: %v", url, s, err)
			}
		}
		t.Logf("refused: %v", err)
	}
}
