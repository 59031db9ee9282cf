//go:build unix

package stack

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One data dir, one Handoff: a second is refused before it opens anything in it (the embedded
// NATS server's store above all), naming the holder; the lock goes with its holder.
func TestADataDirInUseIsRefusedBeforeAnythingOpensIt(t *testing.T) {
	dir := t.TempDir()
	release, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in use by another Handoff (pid %d)", os.Getpid())) {
		t.Fatalf("locking a data dir twice: %v; want it refused naming pid %d", err, os.Getpid())
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err = Run(ctx, Config{Target: TargetAll, DataDir: dir, Logger: slog.New(slog.DiscardHandler),
		EmbeddedNATSAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", POSAdapterAddr: "127.0.0.1:0", MetricsAddr: "",
		CatalogAddr: "127.0.0.1:0", InventoryAddr: "127.0.0.1:0", CartAddr: "127.0.0.1:0", FulfilmentAddr: "127.0.0.1:0",
	}, func(Ready) { t.Error("a second Handoff on a data dir in use started") })
	if err == nil || !strings.Contains(err.Error(), "in use by another Handoff") {
		t.Fatalf("Run on a data dir in use: %v; want it refused", err)
	}
	for _, part := range []string{"nats", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, part)); !os.IsNotExist(err) {
			t.Fatalf("Run on a data dir in use opened %s in it (%v)", part, err)
		}
	}

	release()
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("the data dir once its holder let go: %v", err)
	}
	again()
}
