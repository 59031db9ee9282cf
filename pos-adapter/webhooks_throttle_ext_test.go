package posadapter_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// throttlingVendor answers its first delivery 429 Too Many Requests with a Retry-After the
// test picks (delta-seconds or an HTTP-date), refuses every delivery until that wait is over
// (429 again, as a rate limiter does) and takes each one after it.
type throttlingVendor struct {
	mu       sync.Mutex
	header   func(now time.Time) (value string, until time.Time)
	until    time.Time   // the end of the wait it asked for; zero before the first delivery
	attempts []time.Time // every delivery, of every ticket
	taken    map[string]bool
}

func (v *throttlingVendor) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	v.attempts = append(v.attempts, now)
	if v.until.IsZero() {
		value, until := v.header(now)
		v.until = until
		w.Header().Set("Retry-After", value)
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	if now.Before(v.until) {
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	v.taken[r.Header.Get(posadapter.TicketIDHeader)] = true
	w.WriteHeader(http.StatusOK)
}

// A vendor answering 429 with Retry-After is not tried again, with that ticket or any other
// of its store's, before the wait it asked for is over, although the backoff (100 ms) is far
// shorter; and the 429 does not make a dead letter sooner: the wait (2-3 s) outlasts the
// delivery's give-up time (1 s), and the delivery is still made once the vendor takes it.
// Without Retry-After honoured, the retries (at 0.1, 0.3, 0.7 and 1 s) all fall inside the
// vendor's wait, are refused, and the delivery is a dead letter at 1 s.
func TestWebhookRetryAfterOnA429IsWaitedOutAndDoesNotMakeADeadLetterSooner(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header func(now time.Time) (string, time.Time)
	}{
		{"delta-seconds", func(now time.Time) (string, time.Time) { return "2", now.Add(2 * time.Second) }},
		// An HTTP-date has whole seconds; the response's Date (the server's clock, whole seconds
		// too) is what it is read against.
		{"HTTP-date", func(now time.Time) (string, time.Time) {
			at := now.Truncate(time.Second).Add(3 * time.Second)
			return at.UTC().Format(http.TimeFormat), at
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withConfig(fastWebhooks)) // backoff 100 ms, give-up 1 s
			v := &throttlingVendor{header: tc.header, taken: map[string]bool{}}
			srv := httptest.NewServer(http.HandlerFunc(v.serve))
			t.Cleanup(srv.Close)
			store := "throttled-" + strings.ToLower(tc.name[:1])
			if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
				Webhook: &posv1.StoreWebhook{StoreId: store, Url: srv.URL + "/hook", Enabled: true}})); err != nil {
				t.Fatal(err)
			}
			e.publish("confirmed", order(store, 1), nil)
			// A second ticket, raised once the store is waiting, waits too.
			testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				var waiting bool
				if err := e.pool.QueryRow(context.Background(), `SELECT coalesce(retry_time > now(), false) FROM store_webhooks WHERE store_id = $1`, store).Scan(&waiting); err != nil {
					return err
				}
				if !waiting {
					return fmt.Errorf("store %s not waiting", store)
				}
				return nil
			})
			e.publish("confirmed", order(store, 2), nil)
			testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
				v.mu.Lock()
				defer v.mu.Unlock()
				if len(v.taken) != 2 {
					return fmt.Errorf("vendor took %d of the 2 tickets (%d attempts)", len(v.taken), len(v.attempts))
				}
				return nil
			})
			v.mu.Lock()
			defer v.mu.Unlock()
			attempts := slices.Clone(v.attempts)
			slices.SortFunc(attempts, time.Time.Compare)
			for i, at := range attempts[1:] {
				if at.Before(v.until) {
					t.Fatalf("attempt %d came %v after the first, before the vendor's Retry-After (%v after it) was over",
						i+2, at.Sub(attempts[0]), v.until.Sub(attempts[0]))
				}
			}
			if len(attempts) != 3 {
				t.Errorf("%d attempts; want 3: the refused one, then each ticket once", len(attempts))
			}
			failed, err := e.admin().ListFailedDeliveries(context.Background(), req(&posv1.ListFailedDeliveriesRequest{StoreId: store}))
			if err != nil || len(failed.Msg.GetDeliveries()) != 0 {
				t.Fatalf("dead letters: %v, %v; want none", failed, err)
			}
		})
	}
}

// A 503 with Retry-After is a wait asked for, like a 429's; one without it is a failure,
// retried at the usual backoff.
func TestWebhookRetryAfterOnA503IsWaitedOut(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) {
		fastWebhooks(c)
		c.WebhookGiveUpAfter = 10 * time.Second
	}))
	var (
		mu       sync.Mutex
		attempts []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
		if len(attempts) == 1 {
			w.Header().Set("Retry-After", strconv.Itoa(2))
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	if _, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "busy-503", Url: srv.URL + "/hook", Enabled: true}})); err != nil {
		t.Fatal(err)
	}
	e.publish("confirmed", order("busy-503", 1), nil)
	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(attempts) < 2 {
			return fmt.Errorf("%d attempts, want 2", len(attempts))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if gap := attempts[1].Sub(attempts[0]); gap < 2*time.Second {
		t.Fatalf("the retry came %v after a 503 with Retry-After: 2; want 2s or more", gap)
	}
}
