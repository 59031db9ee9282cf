// Package money holds the bounds every service puts on amounts of money, and how amounts in
// minor units read in major ones.
package money

import (
	"fmt"
	"maps"
	"math"
)

// MaxAmountMinor is the largest price Handoff accepts, in minor units (10^12: ten billion in a
// currency of cents). A line is at most 999 units and an order at most 100 lines, so no total
// can pass 10^17, far inside int64: totals are summed without overflow checks.
const MaxAmountMinor int64 = 1_000_000_000_000

// minorDigits are the ISO 4217 currencies whose minor unit is not a hundredth: how many
// decimal digits their minor unit has. (CLDR's display digits, golang.org/x/text/currency's,
// differ from ISO's for some, IQD's 0 against ISO's 3 for one, and amounts are stored in ISO's
// minor units.)
var minorDigits = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0, "RWF": 0,
	"UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	"CLF": 4, "UYW": 4,
}

// NotHundredths lists the currencies whose minor unit is not a hundredth, with how many decimal
// digits it has (a copy: for checking other tables against this one).
func NotHundredths() map[string]int { return maps.Clone(minorDigits) }

// MinorDigits is how many decimal digits currency's minor unit has: 2 unless ISO 4217 says
// otherwise.
func MinorDigits(currency string) int {
	if d, ok := minorDigits[currency]; ok {
		return d
	}
	return 2
}

// Format shows an amount in minor units of currency as its major units, "12.50 USD",
// "1.500 KWD", "500 JPY".
func Format(amountMinor int64, currency string) string {
	digits := MinorDigits(currency)
	sign, a := "", amountMinor
	if a < 0 {
		sign, a = "-", -a // MaxAmountMinor bounds amounts far inside int64: no overflow
	}
	if digits == 0 {
		return fmt.Sprintf("%s%d %s", sign, a, currency)
	}
	scale := int64(math.Pow10(digits))
	return fmt.Sprintf("%s%d.%0*d %s", sign, a/scale, digits, a%scale, currency)
}
