// Package money holds the bounds every service puts on amounts of money.
package money

// MaxAmountMinor is the largest price Handoff accepts, in minor units (10^12: ten billion in a
// currency of cents). A line is at most 999 units and an order at most 100 lines, so no total
// can pass 10^17, far inside int64: totals are summed without overflow checks.
const MaxAmountMinor int64 = 1_000_000_000_000
