package fulfilment

import (
	"fmt"
	"os"
)

// Failpoints let the crash tests stop a real fulfilment process at a chosen step and kill it
// there. This file is the only place they exist (but for the one below). A failpoint is armed by starting the process
// with HANDOFF_FAILPOINT=<name>; when the process reaches it, it writes
// "failpoint <name> reached" to stderr and blocks that goroutine forever, so the test can
// SIGKILL the process exactly there. Unarmed, a failpoint costs one string comparison.
//
// Failpoints:
//
//	after_reserve          place_order: inventory holds the lines; the order is not written yet
//	after_transition       a transition that releases or commits holds: committed; effect not run yet
//
// In-process tests have one more, armed per Service (LoseCommitReplies): a combined change's
// write round trip fails after its COMMIT, as a connection lost then does.
const (
	failpointAfterReserve    = "after_reserve"
	failpointAfterTransition = "after_transition"
)

// EnvFailpoint names the environment variable that arms a failpoint.
const EnvFailpoint = "HANDOFF_FAILPOINT"

var armedFailpoint = os.Getenv(EnvFailpoint)

func failpoint(name string) {
	if armedFailpoint != name {
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint %s reached\n", name)
	select {}
}
