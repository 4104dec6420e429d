package idempotency

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// A settle context has the handler's values, not its cancellation, and a
// deadline of the timeout rounded up by at most one slot.
func TestSettleContext(t *testing.T) {
	const timeout = 160 * time.Millisecond
	d := newSettleDeadlines(timeout)
	parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), ctxKey{}, "v"))
	cancel(errors.New("the handler's context ended"))

	start := time.Now()
	ctx := d.context(parent)
	if got := ctx.Value(ctxKey{}); got != "v" {
		t.Errorf("Value = %v, want the handler context's value", got)
	}
	if ctx.Err() != nil || context.Cause(ctx) != nil {
		t.Errorf("Err = %v, Cause = %v: the handler's cancellation leaked in", ctx.Err(), context.Cause(ctx))
	}
	deadline, ok := ctx.Deadline()
	if lo, hi := start.Add(timeout), time.Now().Add(timeout+timeout/deadlineSlots); !ok || deadline.Before(lo) || deadline.After(hi) {
		t.Errorf("Deadline = %v, %v; want between %v and %v", deadline, ok, lo, hi)
	}
	if other := d.context(context.Background()); other.Done() != ctx.Done() && time.Since(start) < timeout/deadlineSlots/2 {
		t.Error("two settles begun within a slot have different Done channels: one timer each")
	}

	// A context derived from it ends with it, with its cause.
	child, stop := context.WithCancel(ctx)
	defer stop()
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the derived context did not end with the settle deadline")
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(child.Err(), context.DeadlineExceeded) ||
		!errors.Is(context.Cause(child), context.DeadlineExceeded) {
		t.Errorf("after the deadline: Err = %v, child Err = %v, child Cause = %v; want DeadlineExceeded",
			ctx.Err(), child.Err(), context.Cause(child))
	}
	if time.Since(start) < timeout {
		t.Errorf("the settle context ended after %v, before its timeout %v", time.Since(start), timeout)
	}

	// Later settles get a later slot.
	if next := d.context(context.Background()); next.Err() != nil {
		t.Errorf("a settle begun after the previous slot ended has Err %v", next.Err())
	}
}
