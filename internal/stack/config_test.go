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
