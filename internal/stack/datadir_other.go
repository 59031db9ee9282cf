//go:build !unix

package stack

// lockDataDir does not lock where flock is missing: the private Postgres still refuses a data
// dir in use, later.
func lockDataDir(string) (func(), error) { return func() {}, nil }
