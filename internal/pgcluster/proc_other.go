//go:build !linux

package pgcluster

import "syscall"

// setParentDeathSignal is Linux-only; elsewhere a killed parent can leave
// postgres running, and the next Start reports the data dir as in use.
func setParentDeathSignal(*syscall.SysProcAttr) {}

// serverProcesses cannot look into other processes here: postgres itself
// judges a leftover postmaster.pid.
func serverProcesses(string) ([]int, bool) { return nil, false }
