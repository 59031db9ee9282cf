package pgcluster

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// setParentDeathSignal makes the kernel kill postgres when we die, so a
// killed handoff or test binary leaves no orphan server holding the data dir.
// The kernel sends it when the OS thread that started postgres exits; Go only
// ends threads whose goroutine exits while locked (runtime.LockOSThread), so
// do not call Start from such a goroutine.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGKILL
}

// serverProcesses lists live (non-zombie) postgres processes whose working
// directory is pgdata: the postmaster and every backend chdir there.
func serverProcesses(pgdata string) (pids []int, known bool) {
	want, err := filepath.EvalSymlinks(pgdata)
	if err != nil {
		return nil, false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := "/proc/" + e.Name()
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil {
			continue
		}
		if name := strings.TrimSpace(string(comm)); name != "postgres" && name != "postmaster" {
			continue
		}
		if cwd, err := os.Readlink(dir + "/cwd"); err != nil || cwd != want {
			continue
		}
		if stat, err := os.ReadFile(dir + "/stat"); err == nil {
			// The state follows the parenthesised command name.
			if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
				if state := stat[i+2]; state == 'Z' || state == 'X' {
					continue
				}
			}
		}
		pids = append(pids, pid)
	}
	return pids, true
}
