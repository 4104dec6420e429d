package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/brokerkit/broker"
)

// Timeout gives the handler's context a deadline d from the start of each
// call. When the handler returns a context error after that deadline passed,
// Timeout returns an error that wraps context.DeadlineExceeded and names the
// message ID and the timeout; it is not permanent, so the message is
// redelivered. Any other result, including nil after the deadline (the work
// was done), is returned unchanged, and so is the error of a handler whose
// parent context ended first (the consumer is shutting down).
//
// Timeout cannot stop a handler that ignores its context, and it does not
// abandon one: returning early would let the redelivery run beside the
// handler that is still at work. Handlers must watch ctx in every blocking
// call.
//
// Timeout panics if d is not positive: a handler that may never run is a
// programming error.
func Timeout(d time.Duration) broker.Middleware {
	if d <= 0 {
		panic(fmt.Sprintf("middleware: Timeout(%v): the timeout must be positive", d))
	}
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error {
			expired := &timeoutCause{id: m.ID, d: d}
			tctx, cancel := context.WithTimeoutCause(ctx, d, expired)
			defer cancel()
			err := next(tctx, m)
			if err == nil || context.Cause(tctx) != expired || !isContextError(err) {
				return err
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%v: %w", expired, err)
			}
			return fmt.Errorf("%v: %w: %w", expired, context.DeadlineExceeded, err)
		}
	}
}

// timeoutCause is the cause of a Timeout's deadline, so that it is told apart
// from a deadline or cancellation of the parent context.
type timeoutCause struct {
	id string
	d  time.Duration
}

func (c *timeoutCause) Error() string {
	return fmt.Sprintf("middleware: handler for message %s exceeded its %v timeout", c.id, c.d)
}

func (c *timeoutCause) Unwrap() error { return context.DeadlineExceeded }

func isContextError(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
