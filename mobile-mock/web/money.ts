// Amounts for people, in each currency's own minor unit (ISO 4217), as Handoff's emails and
// command-line shopper app show them (internal/money; money_test.go holds the two to the same).

// The currencies whose minor unit is not a hundredth: how many decimal digits it has.
const minorDigits: Record<string, number> = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0,
  UGX: 0, UYI: 0, VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
  CLF: 4, UYW: 4,
};

// money shows an amount in minor units as "12.50 USD", "1.500 KWD", "500 JPY" (exact: bigint).
export function money(m?: { amountMinor: bigint; currencyCode: string }): string {
  if (!m) return "-";
  const digits = minorDigits[m.currencyCode] ?? 2;
  const sign = m.amountMinor < 0n ? "-" : "";
  const a = m.amountMinor < 0n ? -m.amountMinor : m.amountMinor;
  if (digits === 0) return `${sign}${a} ${m.currencyCode}`;
  const scale = 10n ** BigInt(digits);
  return `${sign}${a / scale}.${(a % scale).toString().padStart(digits, "0")} ${m.currencyCode}`;
}
