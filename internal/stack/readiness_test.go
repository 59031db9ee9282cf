package stack

import (
	"context"
	"fmt"
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
	log := watchFor(t, pool, busyFor-time.Second)
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

// A server at its connection limit (here the role's) answers: the check, which needs a
// connection of its own, is refused with too_many_connections, while the service's pool has its
// connections and works. That is not a database down. Before, every copy of a busy fleet at the
// limit went NOT_SERVING.
func TestADatabaseAtItsConnectionLimitIsNotTakenForDown(t *testing.T) {
	pool := limitedPool(t, limitedRole(t), 2)
	for pool.Stat().TotalConns() < 2 {
		time.Sleep(50 * time.Millisecond)
	}
	log := watchFor(t, pool, 3*dbCheckEvery+time.Second)
	var one int
	if err := pool.QueryRow(t.Context(), `SELECT 1`).Scan(&one); err != nil {
		t.Fatalf("the pool's own query: %v", err)
	}
	if log.everNotServing() {
		t.Fatalf("health went NOT_SERVING (%v) while the service's pool answered: the check was over the connection limit", log.seen)
	}
}

// A server at its connection limit with every slot held by other clients, this copy's pool
// holding none (it lost them to a database restart, and others took the slots first): this copy
// can run no query, so it is not ready. The limit counts as up only while the pool has
// connections of its own.
func TestADatabaseFullOfOthersConnectionsIsDownForACopyWithNone(t *testing.T) {
	role := limitedRole(t)
	limitedPool(t, role, 2) // other clients, holding every slot
	pool := limitedPool(t, role, 0)
	log := watchFor(t, pool, 3*dbCheckEvery+time.Second)
	if !log.everNotServing() {
		t.Fatalf("this copy's pool holds no connection and the server takes no more, yet health stayed SERVING (%v)", log.seen)
	}
}

// limitedRole makes a role that may hold 2 connections at once, dropped when t ends.
func limitedRole(t *testing.T) string {
	t.Helper()
	url := testenv.DatabaseURL(t)
	admin, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	role := fmt.Sprintf("limited_%d", time.Now().UnixNano())
	if _, err := admin.Exec(t.Context(), `CREATE ROLE `+role+` LOGIN CONNECTION LIMIT 2`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), `DROP ROLE `+role)
		_ = admin.Close(context.Background())
	})
	return role
}

// limitedPool opens a pool of at most 2 connections to the test database as role, holding min
// of them open from the start; it closes before the role is dropped.
func limitedPool(t *testing.T, role string, min int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.User = role
	cfg.MaxConns, cfg.MinConns = 2, min
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for pool.Stat().TotalConns() < min {
		time.Sleep(50 * time.Millisecond)
	}
	return pool
}

// watchFor runs the database check of pool for d and gives what it reported.
func watchFor(t *testing.T, pool *pgxpool.Pool, d time.Duration) *servingLog {
	t.Helper()
	s := &system{log: testenv.Logger(t)}
	s.readiness.log = s.log
	log := &servingLog{}
	s.readiness.add(log)
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	_ = s.watchDatabase("PostgreSQL of cart", pool)(ctx)
	return log
}
