package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/middleware"
)

// untilDeadline is a handler that blocks until its context ends and then
// returns what wrap makes of the context error (and result when it is set).
func untilDeadline(wrap func(error) error) broker.Handler {
	return func(ctx context.Context, m *broker.Message) error {
		<-ctx.Done()
		return wrap(ctx.Err())
	}
}

func TestTimeoutExpired(t *testing.T) {
	cases := []struct {
		name string
		h    broker.Handler
	}{
		{"handler returns ctx.Err()", untilDeadline(same)},
		{"handler wraps ctx.Err()", untilDeadline(func(err error) error { return fmt.Errorf("smtp: dial: %w", err) })},
		{"handler returns context.Canceled", untilDeadline(func(error) error { return context.Canceled })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := middleware.Timeout(10*time.Millisecond)(c.h)(context.Background(), &broker.Message{ID: "order-7"})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Timeout returned %v, want an error wrapping context.DeadlineExceeded", err)
			}
			for _, want := range []string{"order-7", "10ms"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if broker.IsPermanent(err) {
				t.Errorf("a timeout must be retried, but %v is permanent", err)
			}
		})
	}
}

func TestTimeoutPassesOtherResults(t *testing.T) {
	decode := broker.Permanent(errors.New("bad json"))
	cases := []struct {
		name string
		h    broker.Handler
		want error
	}{
		{"fast success", func(ctx context.Context, m *broker.Message) error { return nil }, nil},
		{"fast failure", func(ctx context.Context, m *broker.Message) error { return decode }, decode},
		{"success after the deadline", untilDeadline(func(error) error { return nil }), nil},
		{"non-context error after the deadline", untilDeadline(func(error) error { return decode }), decode},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := middleware.Timeout(10*time.Millisecond)(c.h)(context.Background(), &broker.Message{ID: "m"})
			if err != c.want {
				t.Errorf("Timeout returned %v, want %v unchanged", err, c.want)
			}
		})
	}
}

func TestTimeoutSetsDeadline(t *testing.T) {
	const d = time.Minute
	var deadline time.Time
	var ok bool
	before := time.Now()
	err := middleware.Timeout(d)(func(ctx context.Context, m *broker.Message) error {
		deadline, ok = ctx.Deadline()
		return nil
	})(context.Background(), &broker.Message{})
	if err != nil || !ok {
		t.Fatalf("got err %v, deadline set %v", err, ok)
	}
	if deadline.Before(before.Add(d)) || deadline.After(time.Now().Add(d)) {
		t.Errorf("deadline %v is not %v after the call", deadline, d)
	}
}

func TestTimeoutParentCancelledIsNotATimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := func(hctx context.Context, m *broker.Message) error {
		cancel() // the consumer shuts down
		<-hctx.Done()
		return hctx.Err()
	}
	err := middleware.Timeout(time.Hour)(h)(ctx, &broker.Message{ID: "m"})
	if err != context.Canceled {
		t.Errorf("Timeout returned %v, want context.Canceled unwrapped", err)
	}
}

func TestTimeoutParentDeadlineIsNotATimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := middleware.Timeout(time.Hour)(untilDeadline(same))(ctx, &broker.Message{ID: "m"})
	if err != context.DeadlineExceeded {
		t.Errorf("Timeout returned %v, want the parent's context.DeadlineExceeded unwrapped", err)
	}
}

func TestTimeoutNonPositivePanics(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		func() {
			defer func() {
				p := recover()
				if p == nil {
					t.Errorf("Timeout(%v) did not panic", d)
					return
				}
				if msg := fmt.Sprint(p); !strings.Contains(msg, "positive") {
					t.Errorf("Timeout(%v) panicked with %q, want a message saying it must be positive", d, msg)
				}
			}()
			middleware.Timeout(d)
		}()
	}
}
