package posadapter_test

import (
	"testing"
	"testing/fstest"

	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// 00003 as commit b982b12 had it (main, 2026-11-24 07:41, until 308f769 rewrote the file in
// place at 08:09): a cleared boolean instead of cleared_time. A database that build migrated
// records version 3 as applied, so the rewritten file never runs on it.
const escalationTombstonesAtb982b12 = `-- +goose Up
ALTER TABLE escalation_timers ADD COLUMN cleared boolean NOT NULL DEFAULT false;
DROP INDEX escalation_timers_due;
CREATE INDEX escalation_timers_due ON escalation_timers (due_time) WHERE NOT cleared;
CREATE INDEX escalation_timers_cleared ON escalation_timers (due_time) WHERE cleared;

-- +goose Down
DROP INDEX escalation_timers_cleared;
DROP INDEX escalation_timers_due;
DELETE FROM escalation_timers WHERE cleared;
ALTER TABLE escalation_timers DROP COLUMN cleared;
CREATE INDEX escalation_timers_due ON escalation_timers (due_time);
`

// A database created by a build with the earlier 00003 gets the column every escalation
// statement uses (cleared_time), and a timer it had cleared stays cleared: never due again.
func TestADatabaseFromAnEarlierMigration3IsUpgraded(t *testing.T) {
	schema := testenv.UniqueSchema(t, "posmig3")
	old := testenv.MigrationsUpTo(t, posadapter.Migrations(), "00002").(fstest.MapFS)
	old["00003_escalation_tombstones.sql"] = &fstest.MapFile{Data: []byte(escalationTombstonesAtb982b12)}
	pool := testenv.Pool(t, schema, old)
	if _, err := pool.Exec(t.Context(), `INSERT INTO escalation_timers (order_id, store_id, due_time, escalate_after, order_payload, cleared)
		VALUES ('o-cleared', 's1', now() - interval '1 minute', interval '5 minutes', '\x00', true),
		       ('o-open', 's1', now() - interval '1 minute', interval '5 minutes', '\x00', false)`); err != nil {
		t.Fatal(err)
	}
	upgraded := testenv.Pool(t, schema, posadapter.Migrations())
	var due []string
	rows, err := upgraded.Query(t.Context(), `SELECT order_id FROM escalation_timers WHERE due_time <= now() AND cleared_time IS NULL ORDER BY order_id`)
	if err != nil {
		t.Fatalf("escalation_timers after the upgrade: %v", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		due = append(due, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0] != "o-open" {
		t.Errorf("timers due after the upgrade: %v; want only o-open (o-cleared was cleared)", due)
	}
}
