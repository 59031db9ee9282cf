package inventory_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

func TestEventsReachJetStreamThroughTheOutbox(t *testing.T) {
	e := newEnv(t, withSweeper(50*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	js, err := jetstream.New(testenv.NATSConn(t, e.ns), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		_ = outbox.NewRelay(e.pool, js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-relayDone })

	var (
		mu   sync.Mutex
		seen = map[string][]jetstream.Msg{}
	)
	cons, err := js.OrderedConsumer(ctx, streams.EventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"handoff.inventory.>"}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		seen[m.Subject()] = append(seen[m.Subject()], m)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)

	e.createStore(storeAt("s1", 47.61, -122.33))
	if _, err := e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: &inventoryv1.Store{Id: "s1", Name: "New name"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}); err != nil {
		t.Fatal(err)
	}
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("o-release", "s1", "LATTE", 1))
	e.release("o-release", "")
	short := order("o-expire", "s1", "LATTE", 2)
	short.ExpireTime = timestamppb.New(time.Now().Add(300 * time.Millisecond))
	e.mustReserve(short)
	if _, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED}); err != nil {
		t.Fatal(err)
	}

	want := map[string]int{
		inventory.SubjectStoreCreated:      1,
		inventory.SubjectStoreUpdated:      1,
		inventory.SubjectStoreStateChanged: 1,
		inventory.SubjectStockChanged:      5, // set, placed, released, placed, expired
		inventory.SubjectHoldReleased:      1,
		inventory.SubjectHoldExpired:       1,
	}
	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		for subj, n := range want {
			if len(seen[subj]) != n {
				return fmt.Errorf("%d events on %s, want %d", len(seen[subj]), subj, n)
			}
		}
		return nil
	})

	mu.Lock()
	defer mu.Unlock()
	var expired inventoryv1.HoldReleased
	m := seen[inventory.SubjectHoldExpired][0]
	if err := proto.Unmarshal(m.Data(), &expired); err != nil {
		t.Fatal(err)
	}
	if expired.GetReason() != inventoryv1.ReleaseReason_RELEASE_REASON_DEADLINE_PASSED || expired.GetHold().GetState() != inventoryv1.HoldState_HOLD_STATE_EXPIRED ||
		expired.GetHold().GetOrderId() != "o-expire" || m.Headers().Get(outbox.EventTypeHeader) != "handoff.inventory.v1.HoldReleased" {
		t.Errorf("hold.expired event %v, headers %v", &expired, m.Headers())
	}
	var last inventoryv1.StockLevelChanged
	stock := seen[inventory.SubjectStockChanged]
	if err := proto.Unmarshal(stock[len(stock)-1].Data(), &last); err != nil {
		t.Fatal(err)
	}
	if last.GetKind() != inventoryv1.MovementKind_MOVEMENT_KIND_HOLD_RELEASED || last.GetLevel().GetReserved() != 0 || last.GetLevel().GetAvailable() != 10 {
		t.Errorf("last stock.changed %v", &last)
	}
}
