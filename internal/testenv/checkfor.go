package testenv

import (
	"testing"
	"time"
)

// CheckFor calls fn every interval until it returns nil, and fails t with
// fn's last error once total has passed: wait for an outcome, never sleep
// and hope.
func CheckFor(t testing.TB, total, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}
