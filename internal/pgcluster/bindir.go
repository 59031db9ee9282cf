package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// errNoBinaries tells the user exactly what to install; returned when no
// directory with both initdb and postgres can be found.
var errNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: " +
	"install them (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; " +
	"macOS: brew install postgresql) or set DATABASE_URL")

// BinDir returns the directory holding the initdb and postgres binaries. It
// asks pg_config first, then takes the newest /usr/lib/postgresql/*/bin
// (Debian keeps the server off PATH), then looks on PATH.
func BinDir() (string, error) {
	dirs := binDirs()
	if len(dirs) == 0 {
		return "", errNoBinaries
	}
	return dirs[0], nil
}

// binDirs lists the directories holding initdb and postgres, in BinDir's order of preference,
// each once.
func binDirs() []string {
	var dirs []string
	add := func(dir string) {
		if hasServer(dir) && !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		// pg_config may come from the client-only package (libpq-dev), so the
		// directory it names is only trusted when the server is really there.
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			add(strings.TrimSpace(string(out)))
		}
	}
	for _, dir := range debianBinDirs() {
		add(dir)
	}
	if postgres, err := exec.LookPath("postgres"); err == nil {
		add(filepath.Dir(postgres))
	}
	return dirs
}

// binDirFor returns the binaries to run the cluster in pgdata with: BinDir's choice for a new
// cluster, and for an existing one the binaries of the major version its files are in
// (PG_VERSION), which are the only ones that can open them: a machine may keep several majors
// (a Debian upgrade installs the new one beside the old), and pg_config may name another.
func binDirFor(pgdata string) (string, error) {
	b, err := os.ReadFile(filepath.Join(pgdata, "PG_VERSION"))
	if errors.Is(err, os.ErrNotExist) {
		return BinDir()
	} else if err != nil {
		return "", fmt.Errorf("pgcluster: read the cluster's version: %w", err)
	}
	want := strings.TrimSpace(string(b))
	dirs := binDirs()
	if len(dirs) == 0 {
		return "", fmt.Errorf("pgcluster: the cluster in %s is PostgreSQL %s's, and %w", pgdata, want, errNoBinaries)
	}
	var found []string
	for _, dir := range dirs {
		v := serverMajor(dir)
		if v == want {
			return dir, nil
		}
		if v == "" {
			v = "unknown version"
		}
		found = append(found, fmt.Sprintf("%s in %s", v, dir))
	}
	return "", fmt.Errorf("pgcluster: the cluster in %s was made by PostgreSQL %s, whose server binaries are not installed (found: %s): "+
		"install PostgreSQL %s's server binaries (Debian/Ubuntu: apt-get install postgresql-%s, from apt.postgresql.org where the release has none; macOS: brew install postgresql@%s), "+
		"or upgrade the cluster with pg_upgrade, or move %s aside to start a new, empty one",
		pgdata, want, strings.Join(found, ", "), want, want, want, filepath.Dir(pgdata))
}

// serverMajor is the major version of the postgres in dir ("15", or "9.6" before 10), as
// PG_VERSION writes it; "" when it cannot be told.
func serverMajor(dir string) string {
	out, err := exec.Command(binary(dir, "postgres"), "--version").Output()
	if err != nil {
		return ""
	}
	// "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", "... 9.6.24", "... 18beta1"
	m := versionPattern.FindStringSubmatch(string(out))
	if m == nil {
		return ""
	}
	if major, _ := strconv.Atoi(m[1]); major < 10 && m[2] != "" {
		return m[1] + "." + m[2]
	}
	return m[1]
}

var versionPattern = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// debianBinDirs lists /usr/lib/postgresql/*/bin, newest version first.
func debianBinDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Versions compare as numbers: 9.6 < 10 < 17.
	sort.Slice(dirs, func(i, j int) bool {
		return majorVersion(dirs[i]) > majorVersion(dirs[j])
	})
	return dirs
}

func majorVersion(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func hasServer(dir string) bool {
	if dir == "" {
		return false
	}
	for _, name := range []string{"initdb", "postgres"} {
		if !isExecutable(filepath.Join(dir, name+exeSuffix)) {
			return false
		}
	}
	return true
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir() && (exeSuffix != "" || info.Mode()&0o111 != 0)
}

// binary returns the full path of a PostgreSQL program in binDir.
func binary(binDir, name string) string {
	return filepath.Join(binDir, name+exeSuffix)
}

var exeSuffix = func() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}()
