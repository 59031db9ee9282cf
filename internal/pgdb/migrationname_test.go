package pgdb

import (
	"testing"

	"github.com/pressly/goose/v3"
)

// Each shared migration is named for what it does in the log, not as the shared tables.
func TestEachSharedMigrationIsNamedInTheLog(t *testing.T) {
	for v, want := range map[int64]string{
		SharedVersion:           "shared tables (outbox, processed_events)",
		SharedTraceVersion:      "shared: the outbox's trace_parent",
		SharedPruneIndexVersion: "shared: processed_events_by_age",
	} {
		if got := migrationName(&goose.Source{Version: v}); got != want {
			t.Errorf("shared migration %d is logged as %q, want %q", v, got, want)
		}
	}
	if got := migrationName(&goose.Source{Path: "migrations/00002_stores.sql", Version: 2}); got != "00002_stores.sql" {
		t.Errorf("a service migration is logged as %q, want its file's name", got)
	}
}
