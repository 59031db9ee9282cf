package money_test

import (
	"testing"

	"github.com/handoff-dev/handoff/internal/money"
)

// Amounts read in each currency's own minor unit (ISO 4217): a hundredth mostly, none for the
// yen, a thousandth for the Kuwaiti dinar.
func TestFormatReadsMinorUnitsInEachCurrencysOwn(t *testing.T) {
	for _, c := range []struct {
		minor    int64
		currency string
		want     string
	}{
		{1250, "USD", "12.50 USD"},
		{5, "EUR", "0.05 EUR"},
		{-1250, "USD", "-12.50 USD"},
		{500, "JPY", "500 JPY"},
		{500, "XPF", "500 XPF"},
		{1500, "KWD", "1.500 KWD"},
		{7, "BHD", "0.007 BHD"},
		{-1500, "KWD", "-1.500 KWD"},
		{12345, "CLF", "1.2345 CLF"},
		{money.MaxAmountMinor, "USD", "10000000000.00 USD"},
	} {
		if got := money.Format(c.minor, c.currency); got != c.want {
			t.Errorf("Format(%d, %s) = %q, want %q", c.minor, c.currency, got, c.want)
		}
	}
}
