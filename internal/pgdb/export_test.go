package pgdb

import "time"

// SetRollbackTimeout sets the bound of Acquire's rollback at release, and returns the restore.
func SetRollbackTimeout(d time.Duration) (restore func()) {
	old := rollbackTimeout
	rollbackTimeout = d
	return func() { rollbackTimeout = old }
}
