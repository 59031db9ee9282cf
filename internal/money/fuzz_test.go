package money_test

import (
	"math/big"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/money"
)

// FuzzFormat: every amount within the bounds reads back, in major units, as the amount it
// was: "12.50 USD" is 1250, "1.500 KWD" 1500, "-0.05 USD" -5.
func FuzzFormat(f *testing.F) {
	f.Add(int64(1250), "USD")
	f.Add(int64(-5), "USD")
	f.Add(int64(1500), "KWD")
	f.Add(int64(500), "JPY")
	f.Add(money.MaxAmountMinor, "CLF")
	f.Add(-money.MaxAmountMinor, "XXX")
	f.Fuzz(func(t *testing.T, amount int64, currency string) {
		s := money.Format(amount, currency) // no panic, whatever the amount
		if amount > money.MaxAmountMinor || amount < -money.MaxAmountMinor {
			return
		}
		num, cur, ok := strings.Cut(s, " ")
		if !ok || cur != currency {
			t.Fatalf("Format(%d, %q) = %q", amount, currency, s)
		}
		r, ok := new(big.Rat).SetString(num)
		if !ok {
			t.Fatalf("Format(%d, %q) = %q: not a number", amount, currency, s)
		}
		digits := money.MinorDigits(currency)
		if frac := strings.SplitN(strings.TrimPrefix(num, "-"), ".", 2); digits > 0 && (len(frac) != 2 || len(frac[1]) != digits) || digits == 0 && len(frac) != 1 {
			t.Fatalf("Format(%d, %q) = %q: want %d decimals", amount, currency, s, digits)
		}
		scale := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits)), nil))
		if got := r.Mul(r, scale); !got.IsInt() || got.Num().Int64() != amount {
			t.Fatalf("Format(%d, %q) = %q, which is %v minor units", amount, currency, s, got)
		}
	})
}
