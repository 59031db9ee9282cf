package pgcluster

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		// pg_config may come from the client-only package (libpq-dev), so the
		// directory it names is only trusted when the server is really there.
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			if dir := strings.TrimSpace(string(out)); hasServer(dir) {
				return dir, nil
			}
		}
	}
	if dir := newestDebianBinDir(); dir != "" {
		return dir, nil
	}
	if postgres, err := exec.LookPath("postgres"); err == nil {
		if dir := filepath.Dir(postgres); hasServer(dir) {
			return dir, nil
		}
	}
	return "", errNoBinaries
}

func newestDebianBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Versions compare as numbers: 9.6 < 10 < 17.
	sort.Slice(dirs, func(i, j int) bool {
		return majorVersion(dirs[i]) > majorVersion(dirs[j])
	})
	for _, dir := range dirs {
		if hasServer(dir) {
			return dir
		}
	}
	return ""
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
