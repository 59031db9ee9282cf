package fulfilment_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/outbox"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// Staff accepting several orders at once: each change's event is written through a writeBatch
// (batch.go), a pgx.Tx that only queues and has no connection (Conn() is nil). Every event but
// the first of a NotifyGap skips its NOTIFY, and the outbox then asks the transaction for its
// schema (pgdb.SchemaOf(tx.Conn())): the changes must be made all the same.
func TestOrdersAcceptedTogetherAreAllAccepted(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 100)
	const n = 6
	ids := make([]string, n)
	for i := range n {
		// One at a time, a gap apart: the placements themselves are not what this test is about.
		time.Sleep(2 * outbox.NotifyGap)
		ids[i] = e.mustPlace(checkout("alice", fmt.Sprintf("k%d", i), "s1", line{"LATTE-16", 1}), confirmed).GetId()
	}
	time.Sleep(2 * outbox.NotifyGap)

	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: ids[i]})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("accept %s: %v", ids[i], err)
		}
	}
}
