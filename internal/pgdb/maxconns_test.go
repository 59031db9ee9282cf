package pgdb_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// An operator's pool_max_conns in the database URL caps the pool unless a cap is given
// explicitly; a default cap applies only where the URL sets none.
func TestThePoolCapComesFromTheOptionTheURLOrTheDefault(t *testing.T) {
	base := testenv.DatabaseURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "3")
	u.RawQuery = q.Encode()
	withCap := u.String()
	// The keyword/value form of the same server, with spaces around the setting's '='.
	server := "host=" + u.Hostname() + " port=" + u.Port() + " user=" + u.User.Username() + " dbname=" + u.Path[1:] + " sslmode=disable"
	keywords := server + " pool_max_conns = 5"
	// The setting's name inside another setting's value sets nothing; an encoded name does.
	inValue := server + " application_name='x pool_max_conns=2'"
	encoded := base + "&pool%5Fmax_conns=3"

	for _, c := range []struct {
		name string
		url  string
		opts []pgdb.Option
		want int32
	}{
		{"the default where the URL sets none", base, []pgdb.Option{pgdb.WithDefaultMaxConns(16)}, 16},
		{"the URL's over the default", withCap, []pgdb.Option{pgdb.WithDefaultMaxConns(16)}, 3},
		{"a keyword string's over the default", keywords, []pgdb.Option{pgdb.WithDefaultMaxConns(16)}, 5},
		{"an explicit cap over the URL's", withCap, []pgdb.Option{pgdb.WithMaxConns(7)}, 7},
		{"an explicit cap over the default", withCap, []pgdb.Option{pgdb.WithDefaultMaxConns(16), pgdb.WithMaxConns(7)}, 7},
		{"the URL's with no cap given", withCap, nil, 3},
		{"the default where only another setting's value names it", inValue, []pgdb.Option{pgdb.WithDefaultMaxConns(16)}, 16},
		{"an encoded name's over the default", encoded, []pgdb.Option{pgdb.WithDefaultMaxConns(16)}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			pool, err := pgdb.Open(t.Context(), c.url, testenv.UniqueSchema(t, "maxconns"), c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			if got := pool.Config().MaxConns; got != c.want {
				t.Fatalf("pool capped at %d connections, want %d", got, c.want)
			}
		})
	}
}

// A connection of its own (a claim's, a readiness check's) on a URL carrying pool settings
// leaves them out: the server refused pool_max_conns as an unknown parameter, and a process
// given such a DATABASE_URL failed to start.
func TestAConnectionOutsideAPoolIgnoresThePoolsSettings(t *testing.T) {
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "3")
	q.Set("pool_min_conns", "1")
	u.RawQuery = q.Encode()
	cfg, err := pgdb.ConnConfig(u.String())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect with the pool's settings in the URL: %v", err)
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
}
