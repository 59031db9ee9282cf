package hours

import (
	"fmt"
	"time"
)

// ZoneWhereItIs is a fixed-offset IANA zone ("Etc/GMT-3") in which it is hour:xx (0–23) at
// now: a demo chain or a test store kept in it is open, or shut, whatever the time here.
func ZoneWhereItIs(hour int, now time.Time) string {
	offset := ((hour-now.UTC().Hour())%24+24+12)%24 - 12 // hours east of UTC, -12 to 11
	if offset == 0 {
		return "Etc/GMT"
	}
	return fmt.Sprintf("Etc/GMT%+d", -offset) // the Etc zones' signs are POSIX's: west is positive
}
