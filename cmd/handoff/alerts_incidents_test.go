package main

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// incidentScrape and incidentSpan are how often Prometheus scrapes and how long an incident
// below lasts.
const incidentScrape, incidentSpan = time.Minute, 90 * time.Minute

// firing names the rules of deploy/prometheus/alerts.yml that fire (their for: held) on db
// within incidentSpan.
func firing(t *testing.T, db *memQueryable) []string {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 || groups == nil {
		t.Fatalf("%s: %v", alertsFile, errs)
	}
	var fired []string
	for _, g := range groups.Groups {
		for i := range g.Rules {
			if _, ok := firesAt(t, &g.Rules[i], db, 0, incidentSpan, incidentScrape); ok {
				fired = append(fired, g.Rules[i].Alert)
			}
		}
	}
	return fired
}

// scrapedSeries is what a scrape every incidentScrape stores of the series named by kv over
// incidentSpan, at(d) at each scrape.
func scrapedSeries(at func(d time.Duration) float64, kv ...string) storage.Series {
	var samples []chunks.Sample
	for d := time.Duration(0); d <= incidentSpan; d += incidentScrape {
		samples = append(samples, fsample{t: d.Milliseconds(), f: at(d)})
	}
	return storage.NewListSeries(labels.FromStrings(kv...), samples)
}

// steadyParts is what every part serves while nothing is wrong with its queues: each schema's
// outbox relayed at once. Without them HandoffPartNotReporting fires on any incident.
func steadyParts() []storage.Series {
	var out []storage.Series
	for _, schema := range []string{"catalog", "inventory", "cart", "fulfilment", "pos"} {
		out = append(out,
			scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_outbox_backlog_events", "schema", schema),
			scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_outbox_oldest_event_age_seconds", "schema", schema))
	}
	return out
}

// One store's vendor POS stops answering at minute 5 (its tickets refused, or a firewall
// change) while every other store's takes its tickets. The store's deliveries are retried with
// backoff for WebhookGiveUpAfter (72 h), each due later than the last, so the dispatcher is
// never late (handoff_pos_webhooks_late_seconds stays at 0) and no dead letter is counted for
// three days, while the store prepares none of the orders it is sent. /metrics serves what the
// pos-adapter serves then: retries counted beside deliveries, and the oldest undelivered
// ticket's age growing. Some rule must fire within the hour and a half.
func TestAnAlertFiresWhenAStoresVendorPOSRefusesEveryTicket(t *testing.T) {
	const start = 5 * time.Minute
	since := func(d time.Duration) float64 { return max(d-start, 0).Seconds() }
	db := &memQueryable{series: append(steadyParts(),
		scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_pos_webhooks_late_seconds", "schema", "pos"),
		scrapedSeries(func(d time.Duration) float64 { return 2 + since(d) }, "__name__", "handoff_pos_webhook_oldest_undelivered_seconds", "schema", "pos"),
		scrapedSeries(func(d time.Duration) float64 { return 3 * d.Seconds() }, "__name__", "handoff_pos_webhook_deliveries_total", "outcome", "delivered"),
		scrapedSeries(func(d time.Duration) float64 { return since(d) / 60 }, "__name__", "handoff_pos_webhook_deliveries_total", "outcome", "retry"),
		scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_pos_webhook_deliveries_total", "outcome", "dead"),
		scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_pos_webhook_deliveries_total", "outcome", "dropped"),
	)}
	if fired := firing(t, db); len(fired) == 0 {
		t.Errorf("a store's vendor POS has refused every ticket for %v and no rule of %s fires: the store prepares none of its orders for 72 h before HandoffPOSWebhooksDead", incidentSpan-start, alertsFile)
	}

	// Every vendor answering, each ticket delivered within seconds: nothing fires.
	healthy := &memQueryable{series: append(steadyParts(),
		scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_pos_webhooks_late_seconds", "schema", "pos"),
		scrapedSeries(func(d time.Duration) float64 { return float64(int(d.Seconds()) % 3) }, "__name__", "handoff_pos_webhook_oldest_undelivered_seconds", "schema", "pos"),
		scrapedSeries(func(d time.Duration) float64 { return 3 * d.Seconds() }, "__name__", "handoff_pos_webhook_deliveries_total", "outcome", "delivered"),
		scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_pos_webhook_deliveries_total", "outcome", "retry"),
		scrapedSeries(func(time.Duration) float64 { return 0 }, "__name__", "handoff_pos_webhook_deliveries_total", "outcome", "dead"),
	)}
	if fired := firing(t, healthy); len(fired) != 0 {
		t.Errorf("every vendor takes its tickets at once, yet %v fire", fired)
	}
}

// Postgres grows slow at minute 10 (a long transaction holding locks, a disk gone slow):
// inventory's statements take ten times as long, its pool of 16 is always in use, and on
// average three requests wait for a connection, a few giving up at their deadlines. The backlog
// gauges read their queues in their own 2 s and show nothing wrong yet; some rule must say
// which part's database is the trouble.
func TestAnAlertFiresWhenAServicesDatabasePoolIsExhausted(t *testing.T) {
	const start = 10 * time.Minute
	since := func(d time.Duration) float64 { return max(d-start, 0).Seconds() }
	pool := func(inUse, waiting, givenUpPerMinute float64) []storage.Series {
		return []storage.Series{
			scrapedSeries(func(d time.Duration) float64 {
				if d < start {
					return 2
				}
				return inUse
			}, "__name__", "handoff_db_pool_acquired_connections", "schema", "inventory"),
			scrapedSeries(func(time.Duration) float64 { return 16 }, "__name__", "handoff_db_pool_max_connections", "schema", "inventory"),
			scrapedSeries(func(d time.Duration) float64 { return 0.001*d.Seconds() + waiting*since(d) },
				"__name__", "handoff_db_pool_acquire_wait_seconds_total", "schema", "inventory"),
			scrapedSeries(func(d time.Duration) float64 { return givenUpPerMinute * since(d) / 60 },
				"__name__", "handoff_db_pool_canceled_acquires_total", "schema", "inventory"),
		}
	}
	if fired := firing(t, &memQueryable{series: append(steadyParts(), pool(16, 3, 2)...)}); len(fired) == 0 {
		t.Errorf("inventory's requests have queued for a database connection for %v and no rule of %s fires", incidentSpan-start, alertsFile)
	}
	if fired := firing(t, &memQueryable{series: append(steadyParts(), pool(4, 0.01, 0)...)}); len(fired) != 0 {
		t.Errorf("inventory's pool has connections to spare, a request now and then waiting a moment for one, yet %v fire", fired)
	}
}

// A fulfilment copy's machine stops keeping time (NTP stopped, a VM resumed after a pause) and
// its clock falls 40 s behind the database's at minute 10. Its timers go by the database's
// clock, so no order shows it; its log lines and traces are 40 s off, which only the warning
// logged once says. Some rule must fire while it lasts. A busy moment, in which an observed
// reading is late by a round trip of a few seconds, must not.
func TestAnAlertFiresWhenAMachinesClockIsOffTheDatabases(t *testing.T) {
	const start = 10 * time.Minute
	offset := func(at func(d time.Duration) float64) storage.Series {
		return scrapedSeries(at, "__name__", "handoff_db_clock_offset_seconds", "schema", "fulfilment", "instance", "fulfilment-1:9090")
	}
	off := offset(func(d time.Duration) float64 {
		if d < start {
			return 0.002
		}
		return 40
	})
	if fired := firing(t, &memQueryable{series: append(steadyParts(), off)}); len(fired) == 0 {
		t.Errorf("a copy's clock has been 40 s off the database's for %v and no rule of %s fires", incidentSpan-start, alertsFile)
	}
	busy := offset(func(d time.Duration) float64 {
		if int(d.Minutes())%7 == 3 {
			return -2.5 // a reading observed behind a slow statement
		}
		return -0.004
	})
	if fired := firing(t, &memQueryable{series: append(steadyParts(), busy)}); len(fired) != 0 {
		t.Errorf("a copy's clock right, now and then a reading late by a busy round trip, yet %v fire", fired)
	}
}

// Every terminal of one store disconnects at minute 5 and nobody notices: its orders keep
// coming, four an hour, and each is escalated as not accepted and then, its time to be made
// ready over, expires, 40 minutes after it was placed. The chain's other stores work theirs,
// a few shoppers not coming for theirs. Some rule must fire within the hour and a half; with
// only the expiries that shoppers cause, and a forgotten order now and then, none.
func TestAnAlertFiresWhenAStoreStopsWorkingItsOrders(t *testing.T) {
	const start = 5 * time.Minute
	timers := func(unmadePerHour float64, from time.Duration) []storage.Series {
		series := func(action string, at func(d time.Duration) float64) storage.Series {
			return scrapedSeries(at, "__name__", "handoff_fulfilment_timer_actions_total", "action", action)
		}
		unmade := func(d time.Duration) float64 { return float64(int(max(d-from, 0).Hours() * unmadePerHour)) }
		return []storage.Series{
			series("escalated_not_accepted", func(d time.Duration) float64 { return unmade(d + 30*time.Minute) }),
			series("expired_not_accepted", unmade),
			series("expired_not_ready", func(time.Duration) float64 { return 0 }),
			series("expired_not_collected", func(d time.Duration) float64 { return float64(int(d.Hours() * 3)) }),
			series("reminded_expiring_soon", func(d time.Duration) float64 { return d.Minutes() * 2 }),
		}
	}
	if fired := firing(t, &memQueryable{series: append(steadyParts(), timers(4, start+40*time.Minute)...)}); len(fired) == 0 {
		t.Errorf("a store's orders have expired unmade since minute 45, four an hour, and no rule of %s fires", alertsFile)
	}
	if fired := firing(t, &memQueryable{series: append(steadyParts(), timers(1, 0)...)}); len(fired) != 0 {
		t.Errorf("shoppers not coming for some orders and one order forgotten an hour, yet %v fire", fired)
	}
}
