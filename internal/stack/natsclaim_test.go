package stack_test

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// Two processes, each with its own embedded NATS, on one database would split its events
// between two JetStreams without an error anywhere: the second is refused at start, with a
// message saying what to do, and starts once the first has stopped. A second copy sharing one
// NATS (NATS_URL) is a copy side by side and is let in.
func TestASecondEmbeddedNATSOnOneDatabaseIsRefused(t *testing.T) {
	first := stacktest.Config(t)
	first.NATSURL = "" // embedded
	first.LoadDemo = false
	_, stopFirst := runUntilReady(t, first)

	second := stacktest.Config(t)
	second.NATSURL = ""
	second.LoadDemo = false
	second.DatabaseURL = first.DatabaseURL
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := stack.Run(ctx, second, func(stack.Ready) {
		t.Error("a second embedded NATS on one database started")
		cancel()
	})
	if err == nil || !strings.Contains(err.Error(), "embedded NATS") || !strings.Contains(err.Error(), "NATS_URL") {
		t.Fatalf("second embedded NATS on one database: %v; want a refusal saying what to do", err)
	}

	// A copy on a NATS server of its own choosing (here a test server) takes no claim.
	shared := stacktest.Config(t)
	shared.LoadDemo = false
	shared.DatabaseURL = first.DatabaseURL
	_, stopShared := runUntilReady(t, shared)
	stopShared()

	stopFirst()
	_, stopSecond := runUntilReady(t, second)
	stopSecond()
}

// One process reaching its database by two URLs (its services given different ones) holds one
// claim, not a conflict with itself.
func TestOneProcessClaimsADatabaseNamedTwice(t *testing.T) {
	cfg := stacktest.Config(t)
	cfg.NATSURL = ""
	cfg.LoadDemo = false
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", "another-name") // the same database, another URL
	u.RawQuery = q.Encode()
	cfg.ServiceDatabaseURLs = map[string]string{"cart": u.String()}
	_, stop := runUntilReady(t, cfg)
	stop()
}

// A second process whose pos-adapter alone shares the first's database (its outbox and its
// ticket consumer) would split the tickets: it is refused too.
func TestASecondEmbeddedNATSSharingOnlyThePOSAdaptersDatabaseIsRefused(t *testing.T) {
	first := stacktest.Config(t)
	first.NATSURL = ""
	first.LoadDemo = false
	_, stop := runUntilReady(t, first)
	defer stop()

	second := stacktest.Config(t) // a database of its own for the services
	second.NATSURL = ""
	second.LoadDemo = false
	second.ServiceDatabaseURLs = map[string]string{stack.TargetPOSAdapter: first.DatabaseURL}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := stack.Run(ctx, second, func(stack.Ready) {
		t.Error("a second embedded NATS sharing the pos-adapter's database started")
		cancel()
	})
	if err == nil || !strings.Contains(err.Error(), "pos-adapter") {
		t.Fatalf("second embedded NATS sharing the pos-adapter's database: %v; want a refusal naming it", err)
	}
}

// A database named by two URLs is claimed once: the claim is not taken again, with a new
// connection and a log line, every retry.
func TestADatabaseNamedTwiceIsNotClaimedAgainAndAgain(t *testing.T) {
	stack.SetNATSClaimRetry(t, 50*time.Millisecond)
	cfg := stacktest.Config(t)
	cfg.NATSURL = ""
	cfg.LoadDemo = false
	var logs testenv.LockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", "another-name")
	u.RawQuery = q.Encode()
	cfg.ServiceDatabaseURLs = map[string]string{"cart": u.String()}
	_, stop := runUntilReady(t, cfg)
	time.Sleep(500 * time.Millisecond) // ten retry periods; the database never restarted
	stop()
	if n := strings.Count(logs.String(), "claimed again"); n > 0 {
		t.Fatalf("%d \"claimed again\" log lines with no database restart", n)
	}
}
