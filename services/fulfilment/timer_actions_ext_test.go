package fulfilment_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// What the timers do is counted by kind and logged per order with its store: an order expiring
// because its store never accepted or never made it (its terminals all disconnected, say) is
// told apart from one the shopper never collected, which the expired state alone does not,
// and the log says which store.
func TestTimerActionsAreCountedByKindAndLoggedWithTheOrderAndStore(t *testing.T) {
	var logs testenv.LockedBuffer
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	}})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	count := func() map[string]float64 {
		return testenv.CounterSums(t, "handoff_fulfilment_timer_actions_total", nil, "action")
	}
	before := count()
	kinds := []string{"escalated_not_accepted", "expired_not_accepted", "expired_not_ready", "expired_not_collected", "reminded_expiring_soon"}
	for _, k := range kinds {
		if _, ok := before[k]; !ok {
			t.Errorf("no %s series before any timer fired: a rate of it would have nothing to start from", k)
		}
	}

	neverAccepted := e.placeAt("s1", "amy", "k1", "LATTE-16", 1)
	neverReady := e.placeAt("s1", "bob", "k1", "LATTE-16", 1)
	e.accept("s1", neverReady.GetId())
	neverCollected := e.placeAt("s1", "cat", "k1", "LATTE-16", 1)
	e.accept("s1", neverCollected.GetId())
	e.markReady("s1", neverCollected.GetId())
	escalated := e.placeAt("s1", "dan", "k1", "LATTE-16", 1)
	e.waitNoEffects()
	// The first two were due ready two hours ago and their time ran out 45 minutes ago; the
	// third's pickup window ended a moment ago, and the fourth's time to be accepted.
	for _, q := range []struct {
		sql string
		ids []string
	}{
		{`UPDATE orders SET ready_by = now() - interval '2 hours', timer_at = now(),
			accept_time = CASE WHEN accept_time IS NULL THEN NULL ELSE now() - interval '2 hours' END,
			abandon_at = now() - interval '45 minutes' WHERE id = ANY ($1)`, []string{neverAccepted.GetId(), neverReady.GetId()}},
		{`UPDATE orders SET pickup_deadline = now() - interval '1 second', timer_at = now() WHERE id = ANY ($1)`, []string{neverCollected.GetId()}},
		{`UPDATE orders SET not_accepted_at = now() - interval '1 second', timer_at = now() WHERE id = ANY ($1)`, []string{escalated.GetId()}},
	} {
		if _, err := e.pool.Exec(e.ctx, q.sql, q.ids); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{neverAccepted.GetId(), neverReady.GetId(), neverCollected.GetId()} {
		testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if s := e.stateOf(id); s != expired {
				return fmt.Errorf("order %s is %s, want EXPIRED", id, s)
			}
			return nil
		})
	}
	e.waitEvents(escalated.GetId(), "confirmed", "not_accepted")

	want := map[string]string{
		neverAccepted.GetId():  "expired_not_accepted",
		neverReady.GetId():     "expired_not_ready",
		neverCollected.GetId(): "expired_not_collected",
		escalated.GetId():      "escalated_not_accepted",
	}
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		after := count()
		got := map[string]float64{}
		for k := range maps.Keys(after) {
			if d := after[k] - before[k]; d != 0 {
				got[k] = d
			}
		}
		wantCounts := map[string]float64{}
		for _, k := range want {
			wantCounts[k]++
		}
		if !maps.Equal(got, wantCounts) {
			return fmt.Errorf("timer actions counted %v; want %v", got, wantCounts)
		}
		return nil
	})

	logged := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Level, Msg, Action, OrderID, StoreID string
		}
		var raw map[string]any
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			t.Fatalf("a log line that is not JSON: %s", sc.Text())
		}
		line.Level, _ = raw["level"].(string)
		line.Msg, _ = raw["msg"].(string)
		line.Action, _ = raw["action"].(string)
		line.OrderID, _ = raw["order_id"].(string)
		line.StoreID, _ = raw["store_id"].(string)
		if line.Msg != "order timer fired" {
			continue
		}
		if line.Level != "INFO" || line.StoreID != "s1" {
			t.Errorf("timer line %s: want INFO naming store_id s1", sc.Text())
		}
		if _, twice := logged[line.OrderID]; twice {
			t.Errorf("order %s's timer logged twice: %s", line.OrderID, sc.Text())
		}
		logged[line.OrderID] = line.Action
	}
	if !maps.Equal(logged, want) {
		t.Fatalf("timer lines logged (order → action) %v; want %v", logged, want)
	}
}
