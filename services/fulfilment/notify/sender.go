package notify

import (
	"context"
	"errors"
	"time"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// Notification is one delivery a Sender is asked to make.
type Notification struct {
	// ID identifies the notification; the same on every attempt and replay, so receivers can
	// drop duplicates.
	ID string
	// Kind is what happened, e.g. "order.ready".
	Kind string
	// Channel is the sender's channel.
	Channel string
	// Recipient is the email address for the email channel; empty for the webhook.
	Recipient string
	// Order is the order after the change. PickupCode is set only on email notifications of
	// kinds after which the order can still be collected.
	Order *fulfilmentv1.Order
	// Attempt counts from 1.
	Attempt int
	// CreateTime is when the change was recorded.
	CreateTime time.Time
}

// Sender delivers notifications of one channel. Send returns nil once the receiver has taken
// the notification; an error wrapped with [Permanent] when trying again cannot help (the row
// goes straight to the dead-letter list); [RetryAfter] to ask for a minimum wait; any other
// error is retried with backoff. Send must honour ctx's deadline.
type Sender interface {
	Channel() string
	Send(ctx context.Context, n Notification) error
}

// Permanent marks err as a failure no retry can fix (a 4xx answer, a rejected mailbox).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// RetryAfter marks err as temporary with a minimum wait the receiver asked for (HTTP
// Retry-After). The dispatcher waits at least d, capped at its MaxBackoff.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err: err, after: d}
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

func retryAfterOf(err error) time.Duration {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.after
	}
	return 0
}
