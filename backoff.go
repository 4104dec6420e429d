package broker

import (
	"math/rand/v2"
	"time"
)

// Backoff returns how long to wait before the next attempt, given the number
// of the attempt that just failed (1 for the first). It must be safe for
// concurrent use.
type Backoff func(failedAttempt int) time.Duration

// ExponentialBackoff doubles the delay with each failed attempt, starting at
// min and never exceeding max, with "equal jitter": each delay is drawn
// uniformly from [d/2, d] so that consumers that failed together do not retry
// together. A min of zero means no delay at all.
func ExponentialBackoff(min, max time.Duration) Backoff {
	if max < min {
		max = min
	}
	return func(failedAttempt int) time.Duration {
		d := BackoffCeiling(min, max, failedAttempt)
		if d <= 1 {
			return d
		}
		half := d / 2
		return half + rand.N(d-half+1)
	}
}

// BackoffCeiling is the largest delay ExponentialBackoff(min, max) can return
// after failedAttempt; the smallest is half of it.
func BackoffCeiling(min, max time.Duration, failedAttempt int) time.Duration {
	if failedAttempt < 1 {
		failedAttempt = 1
	}
	d := min
	for i := 1; i < failedAttempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// ConstantBackoff waits d after every failed attempt.
func ConstantBackoff(d time.Duration) Backoff {
	return func(int) time.Duration { return d }
}
