package inventory_test

import (
	"testing"
	"testing/fstest"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/inventory"
)

// 00009 as commit 98e663c had it (main, 2026-11-25 13:22), named 00009_hold_sold_late.sql; 412c8e9
// replaced it 12 minutes later with 00009_hold_settled_late.sql, the same version number. A
// database that build migrated records version 9 as applied, so the new file never runs on it.
const holdSoldLateAt98e663c = `-- +goose Up
ALTER TABLE holds ADD COLUMN sold_late boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE holds DROP COLUMN sold_late;
`

// A database created by a build with the earlier 00009 gets the column the code reads on every
// late commit and release (holds.settled_late).
func TestADatabaseFromAnEarlierMigration9IsUpgraded(t *testing.T) {
	schema := testenv.UniqueSchema(t, "invmig9")
	old := testenv.MigrationsUpTo(t, inventory.Migrations(), "00008").(fstest.MapFS)
	old["00009_hold_sold_late.sql"] = &fstest.MapFile{Data: []byte(holdSoldLateAt98e663c)}
	testenv.Pool(t, schema, old)
	upgraded := testenv.Pool(t, schema, inventory.Migrations())
	if _, err := upgraded.Exec(t.Context(), `SELECT settled_late FROM holds`); err != nil {
		t.Errorf("holds.settled_late after the upgrade: %v", err)
	}
}
