package testenv

import (
	"encoding/json"
	"errors"
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

// RowsRead runs sql with args under EXPLAIN ANALYZE, in a transaction of pool's that is rolled
// back (so a statement that writes changes nothing), and returns how many rows its scans read:
// those they returned and those their filters threw away, over every loop. Each of setup, if
// any, runs in the transaction first.
func RowsRead(t testing.TB, pool *pgxpool.Pool, setup []string, sql string, args ...any) float64 {
	t.Helper()
	var plan []struct{ Plan map[string]any }
	errRollBack := errors.New("roll back")
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		for _, s := range setup {
			if _, err := tx.Exec(t.Context(), s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		var raw []byte
		if err := tx.QueryRow(t.Context(), "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &plan); err != nil {
			return err
		}
		return errRollBack
	})
	if !errors.Is(err, errRollBack) {
		t.Fatalf("explain: %v", err)
	}
	return rowsRead(plan[0].Plan)
}

func rowsRead(n map[string]any) float64 {
	var read float64
	switch n["Node Type"] {
	case "Index Scan", "Index Only Scan", "Seq Scan", "Bitmap Heap Scan":
		removed, _ := n["Rows Removed by Filter"].(float64)
		read = (n["Actual Rows"].(float64) + removed) * max(n["Actual Loops"].(float64), 1)
	}
	if kids, ok := n["Plans"].([]any); ok {
		for _, k := range kids {
			read += rowsRead(k.(map[string]any))
		}
	}
	return read
}
