//go:build !unix

package pgcluster

import (
	"log/slog"
	"os"
	"os/exec"
)

// account is unused where there is no root to drop.
type account struct {
	uid, gid uint32
}

func (a *account) String() string { return "" }

func serverAccount(string) (*account, error) { return nil, nil }

func makeReachable(string, *account, *slog.Logger) error { return nil }

func configureServerProcess(*exec.Cmd, *account) {}

// interrupt kills: other systems cannot send postgres SIGINT; it recovers
// from the kill on its next start.
func interrupt(p *os.Process) error {
	return p.Kill()
}
