//go:build unix

package outbox

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/streams"
)

// BenchmarkSyncedPublish measures what JetStream costs per event when every write is synced to
// disk before it is acknowledged (SyncAlways, as Handoff's embedded server and production
// configuration run it): events published one by one, as a relay does while its rounds are
// small, and as atomic batches of several sizes, which the server syncs once per batch but
// stages in a store of their own. It prints the process's CPU (user and system: the syncs are
// system time) and the wall time per event; atomicMin is chosen from these figures.
//
//	go test ./internal/outbox -run '^$' -bench SyncedPublish -benchtime 1x
func BenchmarkSyncedPublish(b *testing.B) {
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(),
		SyncAlways: true, NoLog: true, NoSigs: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	ns.Start()
	b.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("NATS not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if err := streams.Ensure(b.Context(), js, streams.Config{}); err != nil {
		b.Fatal(err)
	}
	r := NewRelay(nil, js, RelayConfig{})
	const events = 2048
	rows := func() []outboxRow {
		batch := make([]outboxRow, events)
		for i := range batch {
			batch[i] = outboxRow{
				seq: int64(i), eventID: uuid.NewString(), subject: "handoff.catalog.product.created",
				eventType: "bench", payload: make([]byte, 600), occurredAt: time.Now(),
			}
		}
		return batch
	}
	measure := func(b *testing.B, publish func(batch []outboxRow) error) {
		for b.Loop() {
			batch := rows()
			cpu0, t0 := processCPU(), time.Now()
			if err := publish(batch); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/events, "cpu-µs/event")
			b.ReportMetric(float64(time.Since(t0).Microseconds())/events, "wall-µs/event")
		}
	}

	b.Run("one-by-one", func(b *testing.B) {
		measure(b, func(batch []outboxRow) error {
			// As a relay's small rounds go: a few in flight, then their acknowledgements.
			const inFlight = 8
			for i := 0; i < len(batch); i += inFlight {
				idx := make([]int, 0, inFlight)
				for j := i; j < min(i+inFlight, len(batch)); j++ {
					idx = append(idx, j)
				}
				futures, _, err := r.publishAsync(batch, idx)
				if err != nil {
					return err
				}
				for _, f := range futures {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						return err
					case <-time.After(10 * time.Second):
						return fmt.Errorf("no acknowledgement")
					}
				}
			}
			return nil
		})
	})
	for _, size := range []int{8, 16, 24, 32, 64, 128} {
		b.Run(fmt.Sprintf("atomic-%d", size), func(b *testing.B) {
			measure(b, func(batch []outboxRow) error {
				for i := 0; i < len(batch); i += size {
					idx := make([]int, 0, size)
					for j := i; j < min(i+size, len(batch)); j++ {
						idx = append(idx, j)
					}
					if err := r.publishAtomic(b.Context(), batch, idx); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
