package stack

import "time"

// SetNATSClaimRetry sets how often a lost claim is taken again, until the test ends.
func SetNATSClaimRetry(t interface{ Cleanup(func()) }, d time.Duration) {
	old := natsClaimRetry
	natsClaimRetry = d
	t.Cleanup(func() { natsClaimRetry = old })
}
