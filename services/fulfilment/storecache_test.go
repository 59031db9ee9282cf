package fulfilment

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/testenv"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// fakeStores answers inventory's get_store with store s1 at the version and name it is set to,
// counting the questions; while hold is set, it waits for release before answering.
type fakeStores struct {
	version atomic.Int64
	name    atomic.Value // string
	asked   atomic.Int32
	hold    atomic.Bool
	release chan struct{}
}

func newFakeStores(t *testing.T) (*fakeStores, *nats.Conn) {
	t.Helper()
	nc := testenv.NATSConn(t, testenv.NATS(t))
	f := &fakeStores{release: make(chan struct{})}
	f.set(1, "Old Name")
	sub, err := nc.Subscribe(subjectGetStore, func(m *nats.Msg) {
		f.asked.Add(1)
		st := &inventoryv1.Store{Id: "s1", Name: f.name.Load().(string), Version: f.version.Load()}
		if f.hold.Load() {
			<-f.release
		}
		b, _ := proto.Marshal(&inventoryv1.GetStoreResponse{Store: st})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return f, nc
}

func (f *fakeStores) set(version int64, name string) {
	f.version.Store(version)
	f.name.Store(name)
}

func newWatchedStoreCache(t *testing.T, nc *nats.Conn) *storeCache {
	t.Helper()
	c := newStoreCache(inventoryClient{nc: nc}, time.Hour, testenv.Logger(t))
	if err := c.watch(nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

func storeName(t *testing.T, c *storeCache, minVersion int64) string {
	t.Helper()
	info, err := c.get(context.Background(), "s1", minVersion)
	if err != nil {
		t.Fatal(err)
	}
	return info.name
}

// A checkout whose holds were placed against a newer version of the store than the cached one
// (the store changed, and this copy has not heard yet) reads the store again.
func TestStoreCacheReadsAgainAStoreOlderThanTheHolds(t *testing.T) {
	f, nc := newFakeStores(t)
	c := newWatchedStoreCache(t, nc)
	if got := storeName(t, c, 0); got != "Old Name" {
		t.Fatalf("first read: %q", got)
	}
	f.set(2, "New Name") // no event: as though it had not reached this copy yet
	if got := storeName(t, c, 1); got != "Old Name" {
		t.Fatalf("cached version 1 for holds at version 1: got %q", got)
	}
	if got := storeName(t, c, 2); got != "New Name" {
		t.Errorf("holds placed against version 2, cache at version 1: got the store as %q; want it read again", got)
	}
	if n := f.asked.Load(); n != 2 {
		t.Errorf("inventory asked %d times; want 2", n)
	}
}

// A store event heard while a read of the store is under way: the read may have answered
// before the change, so what it brings is not kept as fresh; the next use reads again.
func TestStoreCacheReadBegunBeforeAStoreEventIsNotKept(t *testing.T) {
	f, nc := newFakeStores(t)
	c := newWatchedStoreCache(t, nc)
	f.hold.Store(true)
	done := make(chan string)
	go func() {
		info, _ := c.get(context.Background(), "s1", 0)
		done <- info.name
	}()
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if f.asked.Load() == 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	// Inventory changes the store and publishes its event while the old answer is on its way.
	f.set(2, "New Name")
	b, _ := proto.Marshal(&inventoryv1.StoreChanged{Store: &inventoryv1.Store{Id: "s1", Version: 2}})
	if err := nc.Publish(inventory.SubjectStoreUpdated, b); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if c.generation() == 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	f.hold.Store(false)
	close(f.release)
	if got := <-done; got != "Old Name" {
		t.Fatalf("the read under way answered %q", got)
	}
	if got := storeName(t, c, 0); got != "New Name" {
		t.Errorf("after the store's event: got the store as %q (a read begun before the event was kept); want it read again", got)
	}
}

// A store's state change (heard by every copy, whichever handles it for the closings consumer)
// makes its next use read it again.
func TestStoreCacheStateChangeEventMakesTheStoreReadAgain(t *testing.T) {
	f, nc := newFakeStores(t)
	c := newWatchedStoreCache(t, nc)
	storeName(t, c, 0)
	f.set(2, "New Name")
	b, _ := proto.Marshal(&inventoryv1.StoreStateChanged{StoreId: "s1", Version: 2})
	if err := nc.Publish(inventory.SubjectStoreStateChanged, b); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := storeName(t, c, 0); got != "New Name" {
			return context.DeadlineExceeded
		}
		return nil
	})
}
