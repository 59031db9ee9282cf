package stack

import "testing"

// A currency is taken in any case and kept as its ISO 4217 code; zero counts mean defaults.
func TestValidateNormalisesTheCurrencyAndFillsDefaults(t *testing.T) {
	c := Config{Currency: "eur"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Currency != "EUR" || c.StreamReplicas != 1 || c.DBMaxConns != 16 {
		t.Fatalf("validated config: currency %q, %d replicas, %d connections; want EUR, 1, 16", c.Currency, c.StreamReplicas, c.DBMaxConns)
	}
	withDemo := Config{LoadDemo: true}
	if err := withDemo.Validate(); err != nil || withDemo.Currency != "USD" {
		t.Fatalf("the demo without a currency: %v, currency %q; want the demo's USD", err, withDemo.Currency)
	}
}
