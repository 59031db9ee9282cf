package domain

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Pickup codes are derived, not stored: code = HMAC-SHA256(secret, order id) reduced to six
// decimal digits. Nothing in the database can reveal a code; the service recomputes it for the
// order's own shopper and at hand-over. Every copy of the service must share the secret, and
// changing it changes every open order's code, so it is rotated only when no order is open.
//
// Guessing is stopped by counting wrong codes per order (see PickupAttempts), not by the
// code's length: with 5 tries per lock-out period a guesser has a 1 in 200,000 chance per
// period.

// PickupCodeDigits is the length of a pickup code.
const PickupCodeDigits = 6

// MinSecretLen is the shortest pickup-code secret accepted.
const MinSecretLen = 16

// PickupCode returns the order's pickup code, e.g. "042917".
func PickupCode(secret []byte, orderID string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("handoff pickup code\x00"))
	mac.Write([]byte(orderID))
	sum := mac.Sum(nil)
	// 2^64 mod 10^6 is tiny next to 2^64: the digits are uniform for all practical purposes.
	n := binary.BigEndian.Uint64(sum[:8]) % 1_000_000
	return fmt.Sprintf("%06d", n)
}

// pickupCodeTyping removes the spaces and dashes the shopper or staff may type.
var pickupCodeTyping = strings.NewReplacer(" ", "", "-", "")

// PickupCodeProblem says what makes code, as typed, not a pickup code at all, or "": such a
// code is refused as bad input rather than counted as a wrong guess.
func PickupCodeProblem(code string) string {
	code = pickupCodeTyping.Replace(code)
	switch {
	case code == "":
		return "required"
	case len(code) != PickupCodeDigits || strings.Trim(code, "0123456789") != "":
		return fmt.Sprintf("must be %d digits", PickupCodeDigits)
	}
	return ""
}

// CheckPickupCode reports whether code is the order's pickup code, ignoring spaces and dashes
// the shopper or staff may type. The comparison takes the same time whatever the input.
func CheckPickupCode(secret []byte, orderID, code string) bool {
	code = pickupCodeTyping.Replace(code)
	want := PickupCode(secret, orderID)
	return subtle.ConstantTimeCompare([]byte(code), []byte(want)) == 1
}

// PickupAttempts is the rate limit on wrong pickup codes.
//
// Each MaxWrong wrong codes in a row lock hand-over, for Lockout the first time and twice as
// long each time after, up to MaxPickupLockout: a fixed lock would let anyone trying codes
// through a store's terminals make MaxWrong guesses every Lockout for as long as the order
// waits (with the defaults, 60 an hour: 1% of the codes over a pickup window of a week), where
// a doubling one allows about 70 in that week, and a shopper who mistypes a few times still
// waits only Lockout.
type PickupAttempts struct {
	// MaxWrong wrong codes in a row lock hand-over.
	MaxWrong int
	// Lockout is how long hand-over stays locked the first time.
	Lockout time.Duration
}

// MaxPickupLockout caps how long one lock of hand-over lasts.
const MaxPickupLockout = 24 * time.Hour

// LockoutAt is how long hand-over locks when wrong, counted since the last right code, is a
// multiple of MaxWrong.
func (p PickupAttempts) LockoutAt(wrong int) time.Duration {
	d := p.Lockout
	for n := wrong / p.MaxWrong; n > 1 && d < MaxPickupLockout; n-- {
		d *= 2
	}
	return min(d, MaxPickupLockout)
}

// Left is how many more wrong codes lock hand-over, after wrong.
func (p PickupAttempts) Left(wrong int) int {
	return p.MaxWrong - wrong%p.MaxWrong
}

// PickupVerdict is the outcome of one hand-over attempt.
type PickupVerdict int

// Verdicts.
const (
	// CodeAccepted: the code is right; hand the order over.
	CodeAccepted PickupVerdict = iota + 1
	// CodeWrong: wrong code; counted.
	CodeWrong
	// CodeWrongNowLocked: wrong code, and the last one allowed: hand-over is now locked.
	CodeWrongNowLocked
	// HandOverLocked: locked by earlier wrong codes; the code was not even looked at.
	HandOverLocked
)

// Judge decides a hand-over attempt made at now, given the wrong codes counted so far (since
// the last right one, across locks) and the end of any lock. It returns the verdict and the
// new count and lock end to store.
func (p PickupAttempts) Judge(now time.Time, wrongSoFar int, lockedUntil time.Time, ok bool) (PickupVerdict, int, time.Time) {
	if now.Before(lockedUntil) {
		return HandOverLocked, wrongSoFar, lockedUntil
	}
	if ok {
		return CodeAccepted, 0, time.Time{}
	}
	wrong := wrongSoFar + 1
	if wrong%p.MaxWrong == 0 {
		return CodeWrongNowLocked, wrong, now.Add(p.LockoutAt(wrong))
	}
	return CodeWrong, wrong, time.Time{}
}
