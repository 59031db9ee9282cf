package pgdb

import (
	"strings"
	"time"
)

// SetRollbackTimeout sets the bound of Acquire's rollback at release, and returns the restore.
func SetRollbackTimeout(d time.Duration) (restore func()) {
	old := rollbackTimeout
	rollbackTimeout = d
	return func() { rollbackTimeout = old }
}

// SharedTables is the text of the shared migration (version 1) every service schema runs.
const SharedTables = sharedTables

// SharedTraceColumn is the text of the shared migration SharedTraceVersion.
const SharedTraceColumn = sharedTraceColumn

// SharedPruneIndex is the text of the shared migration SharedPruneIndexVersion.
var SharedPruneIndex = strings.Join(sharedPruneIndex, ";\n")
