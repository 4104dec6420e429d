package middleware

import (
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

func TestRetryDefaults(t *testing.T) {
	o := RetryOptions{}.withDefaults()
	if o.MaxAttempts != 3 {
		t.Errorf("default MaxAttempts = %d, want 3", o.MaxAttempts)
	}
	for attempt := 1; attempt <= 10; attempt++ {
		ceil := broker.BackoffCeiling(50*time.Millisecond, 2*time.Second, attempt)
		for range 100 {
			if d := o.Backoff(attempt); d < ceil/2 || d > ceil {
				t.Fatalf("default Backoff(%d) = %v, want within [%v, %v]", attempt, d, ceil/2, ceil)
			}
		}
	}
}
