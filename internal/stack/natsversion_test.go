package stack

import (
	"strings"
	"testing"
)

// A server older than 2.10 drops a consumer's several filter subjects (the pos-adapter's
// inbox came up on the machine's 2.9 server with no filter at all, then failed): it is
// refused at start, naming its version and what is needed.
func TestNATSServersOlderThan210AreRefusedAtStart(t *testing.T) {
	for _, v := range []string{"2.9.10", "2.2.0", "2.10.0-beta.3"} {
		err := checkNATSVersion(v)
		if err == nil || !strings.Contains(err.Error(), v) || !strings.Contains(err.Error(), "2.10.0 or later") {
			t.Errorf("nats-server %s: %v; want refused, naming %s and 2.10.0 or later", v, err, v)
		}
	}
	for _, v := range []string{"2.10.0", "2.11.4", "2.12.0-RC.1", "2.15.2", "3.0.0", "not-a-version"} {
		if err := checkNATSVersion(v); err != nil {
			t.Errorf("nats-server %s refused: %v", v, err)
		}
	}
}
