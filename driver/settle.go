package driver

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// settleContexts hands out contexts for Ack and Nack that end between d - d/8
// and d after the call, without a timer per call: one context with a deadline
// serves every call made within d/8 of its creation. An acknowledgement is a
// few microseconds of work on most brokers, and a timer for each was the
// largest cost the consumer added per message.
type settleContexts struct {
	parent context.Context
	d      time.Duration
	base   time.Time // renewal times count from here, on the monotonic clock

	cur    atomic.Pointer[settleContext]
	mu     sync.Mutex         // serializes renewal
	cancel context.CancelFunc // the newest context's; older ones end at their deadline
}

type settleContext struct {
	ctx     context.Context
	renewAt time.Duration // since base
}

func newSettleContexts(parent context.Context, d time.Duration) *settleContexts {
	return &settleContexts{parent: parent, d: d, base: time.Now()}
}

// get returns a context whose deadline is at least 7/8 of d away.
func (s *settleContexts) get() context.Context {
	// time.Since reads only the monotonic clock: cheaper than time.Now.
	now := time.Since(s.base)
	if c := s.cur.Load(); c != nil && now < c.renewAt {
		return c.ctx
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur.Load(); c != nil && now < c.renewAt {
		return c.ctx
	}
	// The previous context is left to end at its deadline: calls made with it
	// may still be running. Its timer is the only cost.
	ctx, cancel := context.WithTimeout(s.parent, s.d)
	s.cancel = cancel
	s.cur.Store(&settleContext{ctx: ctx, renewAt: now + s.d/8})
	return ctx
}

// stop ends the newest context, once no call uses it any more.
func (s *settleContexts) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}
