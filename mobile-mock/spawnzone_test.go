package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/mobile-mock/load"
	"github.com/handoff-dev/handoff/mobile-mock/system"
)

// -spawn on a database that holds the demo chain already (-database-url, or DATABASE_URL in
// the environment) cannot move the chain's hours: it keeps the zone of its first load. The run
// printed all the same that the chain "keeps its stores' hours in <late-morning zone>", while
// it measured the three all-night stores of a chain where it was 3 am. It must say the truth:
// the zone the stores keep and how many take orders now.
func TestSpawnOnADatabaseHoldingTheChainSaysWhichHoursItKeeps(t *testing.T) {
	db := testenv.FreshDatabaseURL(t)
	// An earlier spawn (or `make run` with DATABASE_URL) loaded the chain where it is 3 am now.
	night := hours.ZoneWhereItIs(3, time.Now())
	_, stop, err := system.Spawn(t.Context(), system.SpawnConfig{DataDir: t.TempDir(), DatabaseURL: db, DemoTimeZone: night, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "results.json")
	args := []string{"load", "-spawn", "-database-url", db, "-shoppers", "2", "-duration", "2s", "-quiet", "-out", out}
	code := run(t.Context(), args, noEnv, &stdout, &stderr)
	t.Logf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	var res load.Result
	if b, err := os.ReadFile(out); err != nil || json.Unmarshal(b, &res) != nil {
		t.Fatalf("results: %v", err)
	}
	busy := system.LateMorningZone(time.Now())
	if strings.Contains(stderr.String(), "keeps its stores' hours in "+busy) {
		t.Errorf("the run claims the late-morning zone %s for a chain loaded in %s", busy, night)
	}
	truth := fmt.Sprintf("keep their hours in %s", night)
	counts := fmt.Sprintf("%d of its %d take orders now", res.StoresAccepting, res.Stores)
	if !strings.Contains(stderr.String(), truth) || !strings.Contains(stderr.String(), counts) {
		t.Errorf("the run does not say the chain keeps its hours in %s, with %s:\n%s", night, counts, stderr.String())
	}
}
