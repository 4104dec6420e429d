package deadline

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// A context with another's values has those values, not their cancellation,
// and a deadline of the timeout rounded up by at most one slot.
func TestWithValuesOf(t *testing.T) {
	const timeout = 160 * time.Millisecond
	d := NewShared(context.Background(), timeout)
	parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), ctxKey{}, "v"))
	cancel(errors.New("the handler's context ended"))

	start := time.Now()
	ctx := d.WithValuesOf(parent)
	if got := ctx.Value(ctxKey{}); got != "v" {
		t.Errorf("Value = %v, want the handler context's value", got)
	}
	if ctx.Err() != nil || context.Cause(ctx) != nil {
		t.Errorf("Err = %v, Cause = %v: the handler's cancellation leaked in", ctx.Err(), context.Cause(ctx))
	}
	deadline, ok := ctx.Deadline()
	if lo, hi := start.Add(timeout), time.Now().Add(timeout+timeout/Slots); !ok || deadline.Before(lo) || deadline.After(hi) {
		t.Errorf("Deadline = %v, %v; want between %v and %v", deadline, ok, lo, hi)
	}
	if other := d.WithValuesOf(context.Background()); other.Done() != ctx.Done() && time.Since(start) < timeout/Slots/2 {
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
	if next := d.WithValuesOf(context.Background()); next.Err() != nil {
		t.Errorf("a settle begun after the previous slot ended has Err %v", next.Err())
	}
}

// Calls within a slot share one context; a later call gets a new one with a
// full timeout, the older one runs to its own deadline, and ending base ends
// them all.
func TestContextSharesASlotAndRenews(t *testing.T) {
	const timeout = 80 * time.Millisecond
	base, stop := context.WithCancel(context.Background())
	s := NewShared(base, timeout)
	first := s.Context()
	if dl, ok := first.Deadline(); !ok || time.Until(dl) < timeout-time.Millisecond || time.Until(dl) > timeout+timeout/Slots {
		t.Fatalf("deadline %v from now, want within [%v, %v]", time.Until(dl), timeout, timeout+timeout/Slots)
	}
	if again := s.Context(); again != first {
		t.Fatal("a call right after the first got a new context; want the shared one")
	}
	time.Sleep(2 * timeout / Slots)
	next := s.Context()
	if next == first {
		t.Fatal("a slot later the same context was handed out; its deadline would come too early")
	}
	if dl, _ := next.Deadline(); time.Until(dl) < timeout-time.Millisecond {
		t.Fatalf("the renewed context ends in %v, want at least %v", time.Until(dl), timeout)
	}
	if first.Err() != nil {
		t.Fatal("the older context ended before its deadline; a call may still use it")
	}
	stop()
	if next.Err() == nil || first.Err() == nil {
		t.Fatal("ending base left a handed-out context running")
	}
}
