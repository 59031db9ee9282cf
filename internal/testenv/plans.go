package testenv

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// GenericPlans returns, by name, the plan Postgres makes for each statement when it plans it
// once for any arguments (a generic plan, as a pool with pgdb.WithKeyedPlans caches), in a
// transaction that first runs settings (such as pgdb.KeyedPlansSQL). The transaction is rolled
// back.
func GenericPlans(t testing.TB, pool *pgxpool.Pool, settings string, statements map[string]string) map[string]string {
	t.Helper()
	ctx := t.Context()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, settings, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("plan settings: %v", err)
	}
	out := make(map[string]string, len(statements))
	for name, sql := range statements {
		n := 0
		for _, m := range param.FindAllStringSubmatch(sql, -1) {
			k, _ := strconv.Atoi(m[1])
			n = max(n, k)
		}
		// Prepared statements outlive the transaction: a new name each time.
		stmt := fmt.Sprintf("generic%d", planCalls.Add(1))
		if _, err := tx.Exec(ctx, "PREPARE "+stmt+" AS "+sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("prepare %s: %v", name, err)
		}
		args := strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
		rows, err := tx.Query(ctx, "EXPLAIN EXECUTE "+stmt+"("+args+")", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		out[name] = strings.Join(lines, "\n")
	}
	return out
}

var (
	param     = regexp.MustCompile(`\$(\d+)`)
	planCalls atomic.Int64
)
