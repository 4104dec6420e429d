// Package deadline hands out contexts with a deadline shared by many calls,
// for work that must be bounded but is too frequent for a timer each: the
// consumer engine's acknowledgements and Dedupe's Complete and Release. A
// context.WithTimeout per call arms and stops a runtime timer under the
// timers' lock, which profiled as the largest cost either added per message.
package deadline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Slots is how many slots one timeout is cut into: a deadline is rounded up
// to the end of its slot, so it comes at most 1/Slots of the timeout late,
// and every call within one slot shares one timer.
const Slots = 16

// Shared hands out contexts that end between timeout and timeout plus one
// slot after the call. It is safe for concurrent use.
type Shared struct {
	base    context.Context
	timeout time.Duration
	slot    time.Duration
	start   time.Time // monotonic origin of the slots

	cur atomic.Pointer[slotContext]
	mu  sync.Mutex // held to replace cur
}

type slotContext struct {
	ctx    context.Context
	cancel context.CancelFunc // never called: calls of the slot may still run when the next one replaces it; the timer ends ctx
	end    time.Duration      // since start
}

// NewShared returns a Shared whose contexts are derived from base: they have
// its values and end when it ends, or at their deadline.
func NewShared(base context.Context, timeout time.Duration) *Shared {
	return &Shared{base: base, timeout: timeout, slot: max(timeout/Slots, 1), start: time.Now()}
}

// Context returns a context derived from base that ends between timeout and
// timeout plus one slot from now. It allocates only once a slot.
func (s *Shared) Context() context.Context {
	due := time.Since(s.start) + s.timeout // the monotonic clock only
	c := s.cur.Load()
	if c == nil || c.end < due {
		c = s.next(due)
	}
	return c.ctx
}

// WithValuesOf returns Context with the values of parent, which may vary from
// call to call, but not parent's cancellation.
func (s *Shared) WithValuesOf(parent context.Context) context.Context {
	return &valuesContext{Context: s.Context(), values: parent}
}

// next makes the slot that ends after due the current one.
func (s *Shared) next(due time.Duration) *slotContext {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur.Load(); c != nil && c.end >= due {
		return c
	}
	end := (due/s.slot + 1) * s.slot
	ctx, cancel := context.WithDeadline(s.base, s.start.Add(end))
	c := &slotContext{ctx: ctx, cancel: cancel, end: end}
	s.cur.Store(c)
	return c
}

// valuesContext is a slot's context (Deadline, Done, Err, and the
// cancellation machinery that contexts derived from it attach to) with the
// values of another context, but not its cancellation.
type valuesContext struct {
	context.Context
	values context.Context
}

// Value looks in the slot's context first. Apart from base's values it holds
// the context package's own, through which context.Cause and the contexts
// derived from this one find the cancellation they attach to; the slot's is
// found there, so the other context's never is, and a derived context ends
// with the slot, without a goroutine. The other context has every other
// value.
func (c *valuesContext) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}
