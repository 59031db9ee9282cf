//go:build !unix

package load

import "time"

// processCPU is unknown here.
func processCPU() time.Duration { return 0 }
