package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/middleware"
)

// failing returns a handler that fails its first n calls (the i-th with
// "fail i") and then succeeds, and a function that reports the calls so far.
func failing(n int, wrap func(error) error) (broker.Handler, func() int) {
	var mu sync.Mutex
	calls := 0
	h := func(ctx context.Context, m *broker.Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= n {
			return wrap(fmt.Errorf("fail %d", calls))
		}
		return nil
	}
	return h, func() int { mu.Lock(); defer mu.Unlock(); return calls }
}

func same(err error) error { return err }

// recordingBackoff is a broker.Backoff that returns next's delays and records
// which failed attempts it was asked about and what it answered.
type recordingBackoff struct {
	next     broker.Backoff
	mu       sync.Mutex
	attempts []int
	delays   []time.Duration
}

func (b *recordingBackoff) backoff(failed int) time.Duration {
	d := b.next(failed)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attempts = append(b.attempts, failed)
	b.delays = append(b.delays, d)
	return d
}

func TestRetryCalls(t *testing.T) {
	noWait := broker.ConstantBackoff(0)
	cases := []struct {
		name      string
		opts      middleware.RetryOptions
		failures  int
		wrap      func(error) error
		wantCalls int
		wantErr   string // "" means nil
	}{
		{"first call succeeds", middleware.RetryOptions{Backoff: noWait}, 0, same, 1, ""},
		{"succeeds on the last call", middleware.RetryOptions{Backoff: noWait}, 2, same, 3, ""},
		{"default is 3 calls", middleware.RetryOptions{Backoff: noWait}, 10, same, 3, "fail 3"},
		{"returns the last error", middleware.RetryOptions{MaxAttempts: 5, Backoff: noWait}, 10, same, 5, "fail 5"},
		{"MaxAttempts 1 means no retry", middleware.RetryOptions{MaxAttempts: 1, Backoff: noWait}, 10, same, 1, "fail 1"},
		{"permanent is not retried", middleware.RetryOptions{MaxAttempts: 5, Backoff: noWait}, 10, broker.Permanent, 1, "permanent: fail 1"},
		{"permanent is not retried even if Retryable says so",
			middleware.RetryOptions{MaxAttempts: 5, Backoff: noWait, Retryable: func(error) bool { return true }},
			10, broker.Permanent, 1, "permanent: fail 1"},
		{"Retryable false stops",
			middleware.RetryOptions{MaxAttempts: 5, Backoff: noWait, Retryable: func(error) bool { return false }},
			10, same, 1, "fail 1"},
		{"Retryable decides per error",
			middleware.RetryOptions{MaxAttempts: 5, Backoff: noWait, Retryable: func(err error) bool { return err.Error() != "fail 2" }},
			10, same, 2, "fail 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, calls := failing(c.failures, c.wrap)
			err := middleware.Retry(c.opts)(h)(context.Background(), &broker.Message{ID: "m1"})
			if got := calls(); got != c.wantCalls {
				t.Errorf("handler called %d times, want %d", got, c.wantCalls)
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Errorf("Retry returned %v, want nil", err)
			case c.wantErr != "" && (err == nil || err.Error() != c.wantErr):
				t.Errorf("Retry returned %v, want %q", err, c.wantErr)
			}
		})
	}
}

func TestRetryBackoffWithinCeiling(t *testing.T) {
	const minD, maxD = time.Microsecond, 8 * time.Microsecond
	rec := &recordingBackoff{next: broker.ExponentialBackoff(minD, maxD)}
	h, calls := failing(100, same)
	err := middleware.Retry(middleware.RetryOptions{MaxAttempts: 7, Backoff: rec.backoff})(h)(context.Background(), &broker.Message{})
	if err == nil || calls() != 7 {
		t.Fatalf("Retry returned %v after %d calls, want an error after 7", err, calls())
	}
	// One wait after each failure but the last, asked with the failed attempt's number.
	if want := []int{1, 2, 3, 4, 5, 6}; fmt.Sprint(rec.attempts) != fmt.Sprint(want) {
		t.Fatalf("Backoff asked about attempts %v, want %v", rec.attempts, want)
	}
	for i, d := range rec.delays {
		ceil := broker.BackoffCeiling(minD, maxD, rec.attempts[i])
		if d < ceil/2 || d > ceil {
			t.Errorf("delay after attempt %d = %v, want within [%v, %v]", rec.attempts[i], d, ceil/2, ceil)
		}
	}
}

func TestRetryContextCancelledDuringBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waiting := make(chan struct{})
	var once sync.Once
	backoff := func(int) time.Duration {
		once.Do(func() { close(waiting) })
		return time.Hour
	}
	h, calls := failing(100, same)
	done := make(chan error, 1)
	go func() {
		done <- middleware.Retry(middleware.RetryOptions{MaxAttempts: 5, Backoff: backoff})(h)(ctx, &broker.Message{})
	}()
	<-waiting
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("Retry returned %v, want context.Canceled unwrapped", err)
		}
		if calls() != 1 {
			t.Errorf("handler called %d times, want 1", calls())
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("Retry took %v to notice the cancellation", elapsed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Retry did not return after its context was cancelled during the backoff wait")
	}
}

func TestRetryStopsWhenContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	h := func(ctx context.Context, m *broker.Message) error {
		calls++
		cancel() // the consumer shuts down while the handler runs
		return errors.New("smtp: connection reset")
	}
	err := middleware.Retry(middleware.RetryOptions{MaxAttempts: 5, Backoff: broker.ConstantBackoff(0)})(h)(ctx, &broker.Message{})
	if calls != 1 || err == nil || err.Error() != "smtp: connection reset" {
		t.Errorf("got %d calls and %v, want 1 call and the handler's error", calls, err)
	}
}

func TestRetryNegativeMaxAttemptsPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Retry with MaxAttempts -1 did not panic")
		}
	}()
	middleware.Retry(middleware.RetryOptions{MaxAttempts: -1})
}
