package pgcluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/pgcluster"
)

// An existing cluster is started by the binaries of the major version its files are in
// (pgdata/PG_VERSION), not by whichever BinDir prefers. Before, BinDir's choice (pg_config's
// directory, else the newest /usr/lib/postgresql/N) ran every cluster: once a second major was
// installed beside the one that made .data/postgres (a Debian upgrade keeps postgresql-15 and
// adds 17; libpq-dev's pg_config names libpq's version), `make run` handed the old cluster to
// the other major's postgres, which refuses it ("database files are incompatible with
// server"), although the matching binaries were there.
//
// Here a pg_config first on PATH names a directory of another major, whose postgres tells its
// version and otherwise only fails, saying it was run.
func TestAnExistingClusterIsStartedByItsOwnMajorVersion(t *testing.T) {
	requireBinaries(t)
	dir := t.TempDir()
	c := start(t, pgcluster.Options{DataDir: dir, Ephemeral: true, Logger: testLogger(t)})
	exec1(t, c, "CREATE TABLE pickup (code text PRIMARY KEY)", "INSERT INTO pickup VALUES ('V15')")
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	version := clusterVersion(t, dir)

	fakeOtherMajor(t, "99")
	c = start(t, pgcluster.Options{DataDir: dir, Ephemeral: true, Logger: testLogger(t)})
	if got := pickupCode(t, c); got != "V15" {
		t.Fatalf("the PG_VERSION %s cluster, restarted beside another major: pickup code %q, want V15", version, got)
	}
	// A new cluster still takes BinDir's choice.
	if dir, err := pgcluster.BinDir(); err != nil || !strings.HasPrefix(dir, os.TempDir()) {
		t.Errorf("BinDir = %s, %v; want the other major's directory pg_config names", dir, err)
	}
}

// A cluster whose major version is not installed at all fails to start with a message naming
// both its version and the ones found, and what to install; before, it was handed to the
// installed major's postgres, whose refusal named neither what to install nor the version.
func TestAClusterOfAMajorNotInstalledNamesWhatToInstall(t *testing.T) {
	requireBinaries(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "pgdata"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pgdata", "PG_VERSION"), []byte("9.6\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fakeOtherMajor(t, "99")
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{DataDir: dir, Ephemeral: true, Logger: testLogger(t)})
	if err == nil {
		_ = c.Stop(context.Background())
		t.Fatal("a PostgreSQL 9.6 cluster started with no 9.6 binaries installed")
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{"PostgreSQL 9.6", "99 in ", "postgresql-9.6", "pg_upgrade"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start of a 9.6 cluster: %v; want it to name %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres.log")); err == nil {
		t.Error("a server was run on the 9.6 cluster: postgres.log was written")
	}
}

func clusterVersion(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "pgdata", "PG_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// fakeOtherMajor puts first on PATH a pg_config naming a bin directory of PostgreSQL major,
// whose initdb and postgres answer --version and otherwise fail, saying they were run.
func fakeOtherMajor(t *testing.T, major string) {
	t.Helper()
	other := t.TempDir()
	bin := filepath.Join(other, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		script := "#!/bin/sh\n" +
			"if [ \"$1\" = --version ]; then echo \"" + name + " (PostgreSQL) " + major + ".1\"; exit 0; fi\n" +
			"echo \"PostgreSQL " + major + "'s " + name + " was run: $*\" >&2\nexit 1\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(other, "pg_config"), []byte("#!/bin/sh\necho "+bin+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", other+string(os.PathListSeparator)+os.Getenv("PATH"))
}
