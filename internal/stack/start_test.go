package stack_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
)

// Stopped while it starts (Ctrl-C during a migration, say), Handoff stops quietly: what the
// step it cut short says about being cut short is no failure.
func TestAStopDuringTheStartIsNoFailure(t *testing.T) {
	cfg := stacktest.Config(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the signal came before the first step was done
	if err := stack.Run(ctx, cfg, func(stack.Ready) { t.Error("ready, though stopped before it started") }); err != nil {
		t.Fatalf("stopped while starting: %v; want a quiet stop", err)
	}
	cfg.Target = "warehouse" // a configuration error is still one, stopped or not
	if err := stack.Run(ctx, cfg, nil); err == nil {
		t.Fatal("a bad configuration was not reported")
	}
}

// A port that is taken stops the start with a message naming the setting to change.
func TestATakenPortNamesTheSettingToChange(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct {
		set  func(*stack.Config)
		want []string
	}{
		{func(c *stack.Config) { c.GatewayAddr = taken.Addr().String() }, []string{"HANDOFF_GATEWAY_ADDR"}},
		{func(c *stack.Config) { c.CartAddr = taken.Addr().String() }, []string{"cart", "HANDOFF_CART_ADDR"}},
		{func(c *stack.Config) { c.MetricsAddr = taken.Addr().String() }, []string{"metrics: ", "HANDOFF_METRICS_ADDR"}},
	} {
		cfg := stacktest.Config(t)
		c.set(&cfg)
		err := stack.Run(context.Background(), cfg, func(stack.Ready) { t.Error("ready on a taken port") })
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("start on a taken port: %v; want a message naming %s", err, w)
			}
		}
	}
}

// A -postgres-port held by another program stops the start with a message naming the setting to
// change. Before, the private cluster's failed bind was reported only as "postgres exited during
// start: exit status 1" over twenty lines of its log; and where the holder was a PostgreSQL
// trusting local connections, Handoff started on that server instead.
func TestATakenPostgresPortNamesTheSettingToChange(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := stacktest.Config(t)
	cfg.DatabaseURL = "" // the private cluster, in the data dir
	cfg.PostgresPort = taken.Addr().(*net.TCPAddr).Port
	err = stack.Run(context.Background(), cfg, func(stack.Ready) { t.Error("ready on a taken PostgreSQL port") })
	for _, w := range []string{"HANDOFF_POSTGRES_PORT", "-postgres-port", "Address already in use"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("start on a taken PostgreSQL port: %v; want a message naming %s", err, w)
		}
	}
}
