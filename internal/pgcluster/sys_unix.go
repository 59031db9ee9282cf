//go:build unix

package pgcluster

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// account is the unprivileged user a root process runs PostgreSQL as.
type account struct {
	uid, gid uint32
	name     string
}

func (a *account) String() string {
	if a.name != "" {
		return a.name
	}
	return "uid " + strconv.FormatUint(uint64(a.uid), 10)
}

// serverAccount returns nil unless we are root. As root it keeps the owner
// of an existing cluster, else picks the postgres system user, else nobody.
func serverAccount(pgdata string) (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if info, err := os.Stat(pgdata); err == nil {
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			return &account{uid: st.Uid, gid: st.Gid}, nil
		}
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &account{uid: uint32(uid), gid: uint32(gid), name: name}, nil
	}
	return nil, fmt.Errorf("pgcluster: PostgreSQL refuses to run as root and there is no postgres or nobody user to run it as: create a postgres user or run as a non-root user")
}

// makeReachable grants search (x) permission to "other" on each ancestor of
// dir that acct cannot pass through; without it postgres cannot reach its
// data directory (t.TempDir and /root are 0700). Nothing is made readable.
func makeReachable(dir string, acct *account, logger *slog.Logger) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgcluster: inspect %s: %w", p, err)
		}
		if !canSearch(info, acct) {
			mode := info.Mode().Perm() | 0o001
			if err := os.Chmod(p, mode); err != nil {
				return fmt.Errorf("pgcluster: %s cannot reach %s: %w", acct, dir, err)
			}
			logger.Warn("granted search permission so the postgres server user can reach its data directory",
				"dir", p, "mode", fmt.Sprintf("%#o", mode), "user", acct.String())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func canSearch(info os.FileInfo, acct *account) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	mode := info.Mode().Perm()
	switch {
	case st.Uid == acct.uid:
		return mode&0o100 != 0
	case st.Gid == acct.gid:
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

// configureServerProcess puts initdb/postgres in their own process group (so
// a Ctrl-C at the terminal reaches us, and we stop postgres after our own
// connections are closed), drops root, and on Linux ties their life to ours.
func configureServerProcess(cmd *exec.Cmd, acct *account) {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if acct != nil {
		attr.Credential = &syscall.Credential{Uid: acct.uid, Gid: acct.gid, Groups: []uint32{}}
	}
	setParentDeathSignal(attr)
	cmd.SysProcAttr = attr
}

// interrupt asks postgres for a fast shutdown.
func interrupt(p *os.Process) error {
	return p.Signal(os.Interrupt)
}
