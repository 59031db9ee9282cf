package pgdb_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/pgdb"
)

// pinnedSums lists every committed migration of the repository with the SHA-256 of its text.
const pinnedSums = "testdata/migrations.sum"

// sharedPin names pgdb's shared migration (sharedTables) in pinnedSums.
const sharedPin = "internal/pgdb/migrate.go#sharedTables"

// sharedTracePin names the shared migration sharedTraceColumn.
const sharedTracePin = "internal/pgdb/migrate.go#sharedTraceColumn"

// sharedPruneIndexPin names the shared migration sharedPruneIndex.
const sharedPruneIndexPin = "internal/pgdb/migrate.go#sharedPruneIndex"

// A migration once committed is never edited: goose records only its version, so a database
// that ran the earlier text never runs the new one, and a build reading the new schema fails on
// it (three such edits needed repair migrations). A change goes in a new migration. A new
// migration is added to testdata/migrations.sum with the line this test prints.
func TestCommittedMigrationsAreNeverEdited(t *testing.T) {
	files, err := filepath.Glob("../../services/*/migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("../../pos-adapter/migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no migrations found: run from internal/pgdb")
	}
	have := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		have[strings.TrimPrefix(filepath.ToSlash(f), "../../")] = hex.EncodeToString(sum[:])
	}
	// The shared migration (version 1 of every schema) is Go text, not a file: pinned the same.
	shared := sha256.Sum256([]byte(pgdb.SharedTables))
	have[sharedPin] = hex.EncodeToString(shared[:])
	trace := sha256.Sum256([]byte(pgdb.SharedTraceColumn))
	have[sharedTracePin] = hex.EncodeToString(trace[:])
	pruneIndex := sha256.Sum256([]byte(pgdb.SharedPruneIndex))
	have[sharedPruneIndexPin] = hex.EncodeToString(pruneIndex[:])

	pinned := map[string]string{}
	fh, err := os.Open(pinnedSums)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		sum, path, ok := strings.Cut(strings.TrimSpace(sc.Text()), "  ")
		if !ok {
			t.Fatalf("%s: line %q is not \"<sha256>  <path>\"", pinnedSums, sc.Text())
		}
		pinned[path] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	for _, path := range slices.Sorted(maps.Keys(have)) {
		switch want, ok := pinned[path]; {
		case !ok:
			t.Errorf("%s is new: add it to internal/pgdb/%s:\n%s", path, pinnedSums, fmt.Sprintf("%s  %s", have[path], path))
		case want != have[path]:
			t.Errorf("%s was edited after it was committed: a database that ran it will not run it again; put the change in a new migration", path)
		}
	}
	for path := range pinned {
		if _, ok := have[path]; !ok {
			t.Errorf("%s was removed: a database that ran it keeps its schema; keep the file", path)
		}
	}
}
