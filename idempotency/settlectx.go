package idempotency

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineSlots is how many slots one SettleTimeout is cut into: a settle's
// deadline is rounded up to the end of its slot, so it comes at most
// 1/deadlineSlots of the timeout late, and all the settles that begin within
// one slot share one timer.
const deadlineSlots = 16

// settleDeadlines hands out the contexts that Complete and Release run with:
// the values of the handler's context, none of its cancellation, and a
// deadline timeout from now, rounded up to the end of a slot. A
// context.WithTimeout per message costs a runtime timer set and stopped under
// the timers' lock, which was a third of Dedupe's own cost when profiled on
// the memory store; here one timer serves every settle of a slot.
type settleDeadlines struct {
	timeout time.Duration
	slot    time.Duration
	start   time.Time // monotonic origin of the slots

	cur atomic.Pointer[deadlineSlot]
	mu  sync.Mutex // held to replace cur
}

// deadlineSlot is a context that ends at the slot's end.
type deadlineSlot struct {
	ctx    context.Context
	cancel context.CancelFunc // never called: settles of the slot may still run when the next slot replaces it; the timer ends ctx
	end    time.Duration      // since start
}

func newSettleDeadlines(timeout time.Duration) *settleDeadlines {
	return &settleDeadlines{timeout: timeout, slot: max(timeout/deadlineSlots, 1), start: time.Now()}
}

// context returns a context with parent's values and a deadline between
// timeout and timeout plus one slot from now.
func (d *settleDeadlines) context(parent context.Context) context.Context {
	due := time.Since(d.start) + d.timeout // the monotonic clock only
	s := d.cur.Load()
	if s == nil || s.end < due {
		s = d.next(due)
	}
	return &settleContext{Context: s.ctx, values: parent}
}

// next makes the slot that ends after due the current one.
func (d *settleDeadlines) next(due time.Duration) *deadlineSlot {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.cur.Load(); s != nil && s.end >= due {
		return s
	}
	end := (due/d.slot + 1) * d.slot
	ctx, cancel := context.WithDeadline(context.Background(), d.start.Add(end))
	s := &deadlineSlot{ctx: ctx, cancel: cancel, end: end}
	d.cur.Store(s)
	return s
}

// settleContext is a slot's context (Deadline, Done, Err, and the cancellation
// machinery that contexts derived from it attach to) with the values of the
// handler's context, but not its cancellation.
type settleContext struct {
	context.Context
	values context.Context
}

// Value looks in the slot's context first. It holds one value only: the
// context package's own, through which context.Cause and the contexts derived
// from this one find the cancellation they attach to; the slot's is found
// there, so the handler's never is, and a derived context ends with the slot,
// without a goroutine. The handler's context has every other value.
func (c *settleContext) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}
