package stack

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// servingLog records what readiness reports.
type servingLog struct {
	mu   sync.Mutex
	seen []bool
}

func (l *servingLog) SetServing(b bool) { l.mu.Lock(); l.seen = append(l.seen, b); l.mu.Unlock() }

func (l *servingLog) everNotServing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.seen {
		if !b {
			return true
		}
	}
	return false
}

// A service's pool with every connection busy (a busy moment: queries running, the database
// answering them) is not a database down: health stays SERVING. Before, the check pinged
// through the pool, waited behind the work, and after two checks took the copy (every copy,
// under the same load) out of rotation.
func TestABusyPoolIsNotTakenForADatabaseDown(t *testing.T) {
	url := testenv.DatabaseURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const busyFor = 4 * dbCheckEvery // two checks time out behind the work, and one more starts
	var busy sync.WaitGroup
	for range 2 {
		c, err := pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		busy.Go(func() {
			defer c.Release()
			_, _ = c.Exec(context.Background(), `SELECT pg_sleep($1)`, busyFor.Seconds())
		})
	}
	s := &system{log: testenv.Logger(t)}
	s.readiness.log = s.log
	log := &servingLog{}
	s.readiness.add(log)
	ctx, cancel := context.WithTimeout(t.Context(), busyFor-time.Second)
	defer cancel()
	_ = s.watchDatabase("PostgreSQL of cart", pool)(ctx)
	// The database answered a fresh connection all along.
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("the database itself does not answer: %v", err)
	}
	_ = c.Close(t.Context())
	busy.Wait()
	if log.everNotServing() {
		t.Fatalf("health went NOT_SERVING (%v) while PostgreSQL answered: the pool was only busy", log.seen)
	}
}
