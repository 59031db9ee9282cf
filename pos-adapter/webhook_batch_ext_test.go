package posadapter_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// webhookStatements counts the webhook dispatcher's statements: claims, and the reads and
// writes of single deliveries (not the raising of tickets, which queues deliveries).
type webhookStatements struct{ claims, others atomic.Int64 }

func (c *webhookStatements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	switch sql := data.SQL; {
	case strings.Contains(sql, "INSERT INTO webhook_deliveries"):
	case strings.Contains(sql, "FROM webhook_deliveries WHERE state = 'pending'"):
		c.claims.Add(1)
	case strings.Contains(sql, "webhook_deliveries"), strings.Contains(sql, "LEFT JOIN store_webhooks"):
		c.others.Add(1)
	}
	return ctx
}

func (c *webhookStatements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countWebhookStatements gives the adapter a pool whose webhook statements c counts.
func countWebhookStatements(t testing.TB, c *webhookStatements) envOption {
	return withConfig(func(cfg *posadapter.Config) {
		pc := cfg.Pool.Config()
		pc.ConnConfig.Tracer = c
		pool, err := pgxpool.NewWithConfig(context.Background(), pc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		cfg.Pool = pool
	})
}

// Without webhooks, tickets cost the webhook dispatcher nothing: no claim per ticket (it used
// to be woken by every ticket on the live feed), no polling; once a store has a webhook, its
// tickets are delivered promptly all the same.
func TestWebhookDispatcherIdlesWithoutWebhooksAndDeliversPromptlyWithOne(t *testing.T) {
	var st webhookStatements
	e := newEnv(t, withConfig(fastWebhooks), countWebhookStatements(t, &st)) // polls every 20ms
	e.waitTickets("quiet-1", 0)
	time.Sleep(100 * time.Millisecond) // the start-up round and retention pass
	st.claims.Store(0)
	st.others.Store(0)

	const tickets = 30
	for i := range tickets {
		e.publish("confirmed", order("quiet-1", i), nil)
	}
	e.waitTickets("quiet-1", tickets)
	time.Sleep(time.Second)
	if n := st.claims.Load() + st.others.Load(); n != 0 {
		t.Fatalf("%d webhook statements for %d tickets of a store without webhook and a second of quiet; want none", n, tickets)
	}

	vendor, url := newVendorPOS(t)
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "hooked-1", Url: url, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	start := time.Now()
	e.publish("confirmed", order("hooked-1", 1), nil)
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := len(vendor.deliveredKinds()); n != 1 {
			return fmt.Errorf("vendor has %d tickets, want 1", n)
		}
		return nil
	})
	t.Logf("delivered %v after the event was published", time.Since(start))
	if d := time.Since(start); d > time.Second {
		t.Fatalf("delivery took %v", d)
	}
}

// A burst of tickets for a store with a webhook is claimed and recorded in batches: fewer
// statements than deliveries (it used to be a claim per wake-up, a read and a write per
// delivery).
func TestWebhookBurstIsClaimedAndRecordedInBatches(t *testing.T) {
	var st webhookStatements
	e := newEnv(t, withConfig(fastWebhooks), countWebhookStatements(t, &st))
	vendor, url := newVendorPOS(t)
	res, err := e.admin().SetStoreWebhook(context.Background(), req(&posv1.SetStoreWebhookRequest{
		Webhook: &posv1.StoreWebhook{StoreId: "burst-1", Url: url, Enabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	vendor.setSecret(res.Msg.GetSigningSecret())
	time.Sleep(100 * time.Millisecond)
	st.claims.Store(0)
	st.others.Store(0)

	const tickets = 60
	for i := range tickets {
		e.publish("confirmed", order("burst-1", i), nil)
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(vendor.deliveredKinds()); n != tickets {
			return fmt.Errorf("vendor has %d tickets, want %d", n, tickets)
		}
		return nil
	})
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var pending int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'`).Scan(&pending); err != nil {
			return err
		}
		if pending != 0 {
			return fmt.Errorf("%d deliveries not recorded as delivered", pending)
		}
		return nil
	})
	claims, others := st.claims.Load(), st.others.Load()
	t.Logf("%d deliveries: %d claims, %d other statements", tickets, claims, others)
	if claims+others >= tickets {
		t.Fatalf("%d claims and %d other statements for %d deliveries; want them in batches, fewer than one per delivery", claims, others, tickets)
	}
}

// A store waiting out its backoff may have a delivery due already: a ticket raised as the
// backoff began, whose raise did not see the new retry_time nor the backoff its delivery. It
// is not claimed before the wait is over, and the dispatcher does not look for it meanwhile;
// it used to claim, and find nothing, every webhookRoundGap (10ms) until the wait was over.
func TestADeliveryDueWhileItsStoreBacksOffDoesNotSpinTheDispatcher(t *testing.T) {
	var st webhookStatements
	e := newEnv(t, countWebhookStatements(t, &st)) // polls every second while deliveries are pending
	ctx := context.Background()
	vendors := map[string]*vendorPOS{}
	for _, store := range []string{"waiting-1", "other-1"} {
		v, url := newVendorPOS(t)
		res, err := e.admin().SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{
			Webhook: &posv1.StoreWebhook{StoreId: store, Url: url, Enabled: true}}))
		if err != nil {
			t.Fatal(err)
		}
		v.setSecret(res.Msg.GetSigningSecret())
		vendors[store] = v
	}
	if _, err := e.pool.Exec(ctx, `UPDATE store_webhooks SET retry_time = now() + interval '1 minute', failures = 1 WHERE store_id = 'waiting-1'`); err != nil {
		t.Fatal(err)
	}
	e.publish("confirmed", order("waiting-1", 1), nil)
	e.waitTickets("waiting-1", 1)
	// As a raise that missed the backoff's start leaves it: due now.
	tag, err := e.pool.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_time = now() WHERE store_id = 'waiting-1' AND state = 'pending'`)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("make the delivery due: %v, %v", tag, err)
	}
	// Another store's ticket wakes the dispatcher: a round that finds the delivery due.
	e.publish("confirmed", order("other-1", 1), nil)
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := len(vendors["other-1"].deliveredKinds()); n != 1 {
			return fmt.Errorf("the other store's vendor has %d tickets, want 1", n)
		}
		return nil
	})
	st.claims.Store(0)
	time.Sleep(300 * time.Millisecond)
	if n := st.claims.Load(); n > 3 {
		t.Errorf("%d claim rounds in 300ms with a delivery waiting for its store's backoff to end in a minute; want next to none", n)
	}

	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	claimed, next, err := a.ClaimDeliveries(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	if claimed != 0 || next == nil || *next < 50*time.Second {
		due := "never"
		if next != nil {
			due = next.String()
		}
		t.Errorf("a claim round claimed %d and gave the next due in %s; want none claimed and the next due when the store's backoff ends, in about a minute", claimed, due)
	}
	if n := len(vendors["waiting-1"].deliveredKinds()); n != 0 {
		t.Errorf("the store in backoff got %d tickets; want none before its wait is over", n)
	}
}
