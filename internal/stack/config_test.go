package stack

import (
	"net/url"
	"testing"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// A currency is taken in any case and kept as its ISO 4217 code; zero counts mean defaults (a
// pool cap of 0 stays 0: each pool takes its URL's pool_max_conns or DefaultDBMaxConns).
func TestValidateNormalisesTheCurrencyAndFillsDefaults(t *testing.T) {
	c := Config{Currency: "eur"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Currency != "EUR" || c.StreamReplicas != 1 || c.DBMaxConns != 0 {
		t.Fatalf("validated config: currency %q, %d replicas, %d connections; want EUR, 1, 0", c.Currency, c.StreamReplicas, c.DBMaxConns)
	}
	withDemo := Config{LoadDemo: true}
	if err := withDemo.Validate(); err != nil || withDemo.Currency != "USD" {
		t.Fatalf("the demo without a currency: %v, currency %q; want the demo's USD", err, withDemo.Currency)
	}
}

// A demo time zone must be one the machine can load; a typo fails the start, not the first order.
func TestValidateRefusesAnUnknownDemoTimeZone(t *testing.T) {
	bad := Config{LoadDemo: true, DemoTimeZone: "Etc/GMT-99"}
	if err := bad.Validate(); err == nil {
		t.Fatal("an unknown demo time zone was accepted")
	}
	good := Config{LoadDemo: true, DemoTimeZone: "Etc/GMT-3"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
}

// The services' pools take -db-max-conns where it is set, else the database URL's
// pool_max_conns, else DefaultDBMaxConns: before, the flag's default of 16 overrode an
// operator's pool_max_conns without a word.
func TestServicePoolsTakeTheURLsCapUnlessOneIsConfigured(t *testing.T) {
	withCap := testenv.FreshDatabaseURL(t) // pool_max_conns=TestPoolConns
	u, err := url.Parse(withCap)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del("pool_max_conns")
	u.RawQuery = q.Encode()
	without := u.String()
	for _, c := range []struct {
		url      string
		dbMax    int
		wantConn int32
	}{
		{withCap, 0, testenv.TestPoolConns},
		{withCap, 9, 9},
		{without, 0, DefaultDBMaxConns},
		{without, 3, 3},
	} {
		cfg := Config{DBMaxConns: c.dbMax}
		pool, err := pgdb.Open(t.Context(), c.url, testenv.UniqueSchema(t, "poolsize"), cfg.poolSize())
		if err != nil {
			t.Fatal(err)
		}
		got := pool.Config().MaxConns
		pool.Close()
		if got != c.wantConn {
			t.Errorf("-db-max-conns %d on %s: pool capped at %d, want %d", c.dbMax, c.url, got, c.wantConn)
		}
	}
}
