package pgcluster_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `.ci/system-deps run` (make run's first step) installs nothing for PostgreSQL when DATABASE_URL
// names the server to use: make run then needs no local binaries. Before, as root on a machine
// without them, it installed Debian's postgresql package first and looked at DATABASE_URL only
// had that failed: a system change nobody asked for (the package also creates and starts a
// "main" cluster on 5432). The script lives in .ci; its test is here, with the binaries it
// installs for this package.
//
// The machine's binaries are hidden in a private mount namespace (unshare -m, with no network:
// -n), and a fake apt-get first on PATH only records what it is asked.
func TestSystemDepsForRunWithDatabaseURLInstallsNoPostgreSQL(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: system-deps installs only as root, and the mount namespace needs it")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, arg, databaseURL string
		wantInstall            bool
		wantSaid               string
	}{
		{"run with DATABASE_URL", "run", "postgres://postgres@db.example:5432/handoff", false, "using the server in DATABASE_URL"},
		// The same machine without it: the fake apt-get is reached, so the case above proves something.
		{"run without DATABASE_URL", "run", "", true, "installing postgresql with apt-get"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake := t.TempDir()
			log := filepath.Join(fake, "apt.log")
			if err := os.WriteFile(filepath.Join(fake, "apt-get"), []byte("#!/bin/sh\necho \"apt-get $*\" >> "+log+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			script := `set -e
[ -d /usr/lib/postgresql ] && mount -t tmpfs none /usr/lib/postgresql
cd "$1"
env -i PATH="$2:/usr/bin:/bin" DATABASE_URL="$3" bash .ci/system-deps "$4"`
			out, err := exec.Command("unshare", "-m", "-n", "--propagation", "private",
				"bash", "-c", script, "sh", root, fake, c.databaseURL, c.arg).CombinedOutput()
			if err != nil {
				t.Fatalf("system-deps %s: %v\n%s", c.arg, err, out)
			}
			asked, _ := os.ReadFile(log)
			if installed := strings.Contains(string(asked), "install"); installed != c.wantInstall {
				t.Errorf("system-deps %s, DATABASE_URL=%q: apt-get asked:\n%s\nwant an install: %v; output:\n%s", c.arg, c.databaseURL, asked, c.wantInstall, out)
			}
			if !strings.Contains(string(out), c.wantSaid) {
				t.Errorf("system-deps %s, DATABASE_URL=%q said:\n%s\nwant %q", c.arg, c.databaseURL, out, c.wantSaid)
			}
		})
	}
}
