package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/brokerkit/broker"
)

// RetryOptions configure Retry. The zero value is valid.
type RetryOptions struct {
	// MaxAttempts is the total number of calls to the handler for one delivery,
	// the first included. Zero means 3; 1 means no retry. Negative panics.
	MaxAttempts int
	// Backoff gives the wait after each failed attempt. Nil means
	// broker.ExponentialBackoff(50ms, 2s).
	Backoff broker.Backoff
	// Retryable, if set, is asked about each error that could be retried; false
	// returns the error at once. Nil means every error that is not
	// broker.Permanent. Permanent errors are never retried, whatever it says.
	Retryable func(error) bool
}

// Retry calls the handler again in process when it fails, up to
// opts.MaxAttempts calls in all, waiting opts.Backoff(n) after the n-th
// failure. It returns nil as soon as one call succeeds, and otherwise the last
// call's error, so the consumer then redelivers or dead-letters as usual.
//
// It does not retry an error marked broker.Permanent, an error that
// opts.Retryable rejects, or any error once ctx has ended. If ctx ends while
// Retry waits between attempts it returns ctx.Err() at once. Message.Attempt
// counts broker deliveries and is not changed by in-process attempts.
//
// Retry panics if opts.MaxAttempts is negative.
func Retry(opts RetryOptions) broker.Middleware {
	opts = opts.withDefaults()
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error {
			for attempt := 1; ; attempt++ {
				err := next(ctx, m)
				if err == nil {
					return nil
				}
				if attempt >= opts.MaxAttempts || broker.IsPermanent(err) || ctx.Err() != nil ||
					opts.Retryable != nil && !opts.Retryable(err) {
					return err
				}
				if werr := wait(ctx, opts.Backoff(attempt)); werr != nil {
					return werr
				}
			}
		}
	}
}

func (o RetryOptions) withDefaults() RetryOptions {
	if o.MaxAttempts < 0 {
		panic(fmt.Sprintf("middleware: Retry: RetryOptions.MaxAttempts %d is negative", o.MaxAttempts))
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 3
	}
	if o.Backoff == nil {
		o.Backoff = broker.ExponentialBackoff(50*time.Millisecond, 2*time.Second)
	}
	return o
}

// wait returns nil after d, or ctx.Err() as soon as ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
