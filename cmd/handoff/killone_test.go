package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/mobile-mock/load"
	"github.com/handoff-dev/handoff/mobile-mock/system"
)

// Killing one service process alone, with SIGKILL in the middle of a load, loses nothing
// (invariant 5) when the system runs split, each part its own process on a shared PostgreSQL
// and NATS: the other parts keep going and call a dead peer meanwhile. Once the killed part is
// back, orders flow again through it, and once the load has stopped: no order stays PENDING,
// every order ever confirmed has exactly one NEW_ORDER ticket, no ended order holds stock and
// every open one does, each cart has one order, and inventory's invariants hold. The parts
// that keep state of their own are killed in turn. (The whole-system kill is
// TestKillingTheSystemMidLoadLosesNothing.)
func TestKillingOneServiceProcessMidLoadLosesNothing(t *testing.T) {
	bin := buildBinary(t)
	for _, victim := range []string{stack.TargetInventory, stack.TargetFulfilment, stack.TargetCart, stack.TargetPOSAdapter} {
		t.Run(victim, func(t *testing.T) { killOneServiceMidLoad(t, bin, victim) })
	}
}

func killOneServiceMidLoad(t *testing.T, bin, victim string) {
	nats := testenv.NATS(t)
	dbURL := testenv.FreshDatabaseURL(t)
	addr := map[string]string{}
	for _, part := range []string{stack.TargetCatalog, stack.TargetInventory, stack.TargetCart, stack.TargetFulfilment, stack.TargetPOSAdapter} {
		addr[part] = testenv.FreeAddr(t)
	}
	common := []string{"NATS_URL=" + nats.ClientURL(), "DATABASE_URL=" + dbURL, "HANDOFF_JWT_KEYS=" + testKeys,
		"HANDOFF_PICKUP_CODE_SECRET=kill-one-test-pickup-secret", "HANDOFF_DEMO=true", "HANDOFF_METRICS_ADDR=off",
		"HANDOFF_DB_MAX_CONNS=6", "HANDOFF_SHUTDOWN_GRACE=2s",
		"HANDOFF_CATALOG_ADDR=" + addr[stack.TargetCatalog], "HANDOFF_INVENTORY_ADDR=" + addr[stack.TargetInventory],
		"HANDOFF_CART_ADDR=" + addr[stack.TargetCart], "HANDOFF_FULFILMENT_ADDR=" + addr[stack.TargetFulfilment],
		"HANDOFF_POS_ADDR=" + addr[stack.TargetPOSAdapter], "HANDOFF_GATEWAY_ADDR=127.0.0.1:0"}
	start := func(target string) *process {
		t.Helper()
		return startTarget(t, bin, nil, append(common, "HANDOFF_TARGET="+target, "HANDOFF_DATA_DIR="+t.TempDir())...)
	}
	procs := map[string]*process{}
	// In start order: the cart calls fulfilment, which calls inventory; the edges dial them all.
	for _, target := range []string{stack.TargetCatalog, stack.TargetInventory, stack.TargetFulfilment, stack.TargetCart,
		stack.TargetPOSAdapter, stack.TargetGateway} {
		procs[target] = start(target)
	}
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.waitExit(t)
		}
	}()
	keys, err := system.Keys(testKeys, "")
	if err != nil {
		t.Fatal(err)
	}
	db, count := checkDB(t, dbURL)

	// Shoppers check out, and terminals accept, ready and hand over, through the kill and the
	// restart. Modest: the machine is small, and six processes share it.
	ctx, stopLoad := context.WithCancel(t.Context())
	loaded := make(chan struct{})
	var res *load.Result
	go func() {
		defer close(loaded)
		res, _ = load.Run(ctx, load.Config{
			Endpoints: system.Endpoints{GatewayURL: "http://" + procs[stack.TargetGateway].gateway, POSURL: "http://" + addr[stack.TargetPOSAdapter],
				InventoryAddr: addr[stack.TargetInventory], Keys: keys},
			Shoppers: 6, Duration: 3 * time.Minute, OrderTimeout: 10 * time.Second,
		})
	}()
	defer func() { stopLoad(); <-loaded }()
	testenv.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
		// Orders in every state: some collected, some still being placed or worked.
		if n := count(`SELECT count(*) FROM fulfilment.orders WHERE state = 5`); n < 10 {
			return fmt.Errorf("%d orders collected so far", n)
		}
		if n := count(`SELECT count(*) FROM fulfilment.orders WHERE state BETWEEN 1 AND 4`); n == 0 {
			return fmt.Errorf("no order open")
		}
		return nil
	})
	killed := time.Now()
	if err := procs[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = procs[victim].waitExit(t)
	t.Logf("killed %s with orders by state %s; %d confirmed without a ticket yet, %d events in fulfilment's outbox, %d hold effects not done",
		victim, byState(t, db), unticketed(t, db), count(`SELECT count(*) FROM fulfilment.outbox`), count(`SELECT count(*) FROM fulfilment.order_effects`))
	// The others go on calling it while it is down, as they would while an orchestrator
	// replaces it.
	time.Sleep(3 * time.Second)
	collected := count(`SELECT count(*) FROM fulfilment.orders WHERE state = 5`)
	procs[victim] = start(victim)
	restarted := time.Now()
	// The others find it again: orders are collected again, through every part.
	testenv.CheckFor(t, 45*time.Second, 100*time.Millisecond, func() error {
		if n := count(`SELECT count(*) FROM fulfilment.orders WHERE state = 5`); n < collected+5 {
			return fmt.Errorf("%d orders collected since %s is back; want 5", n-collected, victim)
		}
		return nil
	})
	t.Logf("orders collected again %v after the restart", time.Since(restarted).Round(100*time.Millisecond))
	stopLoad()
	<-loaded
	var during int
	if err := db.QueryRow(t.Context(), `SELECT count(*) FROM fulfilment.orders WHERE create_time BETWEEN $1 AND $2`, killed, restarted).Scan(&during); err != nil {
		t.Fatal(err)
	}
	t.Logf("load stopped with orders by state %s; %d orders made while %s was down", byState(t, db), during, victim)
	if res != nil {
		t.Logf("the load's checkouts %d, confirmed %d, failed %d, collected %d; its errors: %v", res.Checkouts, res.Confirmed, res.Failed, res.Collected, res.Errors)
	}

	checkInvariants := inventoryAdmin(t, keys, addr[stack.TargetInventory])

	// Recovery settles PENDING orders within seconds (fulfilment's PendingAfter, 5 s, swept
	// every second); effects claimed by a killed fulfilment are taken again after their lease
	// (30 s), and effects that failed against a dead inventory are retried within their backoff.
	began := time.Now()
	testenv.CheckFor(t, 75*time.Second, 500*time.Millisecond, func() error {
		problems := lossProblems(t, db, checkInvariants)
		if len(problems) > 0 {
			return fmt.Errorf("with %s back: %s", victim, strings.Join(problems, "; "))
		}
		return nil
	})
	t.Logf("settled %v after the load stopped: orders by state %s", time.Since(began).Round(100*time.Millisecond), byState(t, db))
}
