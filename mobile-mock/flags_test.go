package main

import (
	"bytes"
	"strings"
	"testing"
)

// Flags whose values are out of range or unreadable are bad flags: the command refuses them up
// front with exit 2, naming the flag (as it does -shoppers 0, -near 91,0 or -demo-hours x),
// before looking for a system or spawning one, rather than run with them (or fail later with 1).
func TestBadFlagValuesExitTwo(t *testing.T) {
	noSystem := []string{"-data-dir", t.TempDir()} // no key here: anything past parsing fails with 1
	for _, args := range [][]string{
		{"demo", "-near", "NaN,NaN"},      // ParseFloat reads NaN; NaN < -90 and NaN > 90 are both false
		{"load", "-near", "NaN,-122.3"},   // same in load
		{"load", "-orders", "-3"},         // negative count: load.Run refuses it only after set-up (and after -spawn)
		{"load", "-radius", "-1"},         // every SetPickup fails InvalidArgument; the run exits 0 (see the other test)
		{"load", "-in-flight", "-2"},      // silently becomes 4
		{"load", "-in-flight", "0"},       // so does 0
		{"demo", "-radius", "-1"},         // the locator would refuse it only once a system is found
		{"demo", "-items", ":2"},          // empty SKU
		{"demo", "-items", "LATTE-16:2x"}, // Sscanf reads the 2 and ignores the rest
		{"demo", "-items", "LATTE-16:"},   // no quantity after the colon
	} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append(args, noSystem...), noEnv, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), args[1]) {
			t.Errorf("mobile-mock %v exited %d, want 2 (bad flag) naming %s; stderr: %q", args, code, args[1], stderr.String())
		}
	}
}
