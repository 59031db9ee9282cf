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
