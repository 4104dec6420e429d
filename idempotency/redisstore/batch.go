package redisstore

import (
	"context"
	"errors"
	"slices"

	"github.com/redis/go-redis/v9"
)

// Group commit. A call made while fewer than maxInFlight callers are sending
// is sent at once by its own caller, alone. Calls made while maxInFlight
// callers are sending queue. When a sender's round trip returns, it tells the
// oldest queued call to lead (handOver), passes each member of its batch its
// answer, and returns its own; the new leader sends itself and the queued
// calls not told to lead, up to maxBatch, in one pipeline, and hands over in
// turn. A sender that finds nothing queued gives up its turn. So no goroutine
// runs besides the callers', and under load each round trip carries the calls
// that queued while the previous ones were in flight.

// script is a Lua script and its SHA-1 digest, each boxed once for the
// commands' argument lists.
type script struct {
	src    string
	srcArg any // src
	shaArg any // the digest of src, as EVALSHA takes it
}

func newScript(src string) *script {
	return &script{src: src, srcArg: src, shaArg: redis.NewScript(src).Hash()}
}

// A call's state, guarded by Store.mu.
const (
	queued  = iota // in Store.queue
	leading        // in Store.queue, and told to send a batch
	sent           // taken into a batch: its caller no longer decides whether it runs
)

// call is one script run that waits for, or travels in, a batch.
type call struct {
	script *script
	args   [6]any // EVALSHA sha 1 key ARGV[1] [ARGV[2]]
	nargs  int
	cmd    *redis.Cmd
	n      int64 // the script's answer, when err is nil
	err    error
	state  int
	// wake receives true when the call is to lead the next batch, false when
	// n and err are set. It holds one signal, so that senders never block.
	wake  chan bool
	batch []*call // what the call sends when it leads
}

// run runs sc on key with ARGV[1] val and, unless ms is 0, ARGV[2] ms, in the
// next batch, and returns the script's answer: the reply error of Redis or of
// the client as it is, or ctx.Err() if ctx ended before the answer came.
func (s *Store) run(ctx context.Context, sc *script, key, val string, ms int64) (int64, error) {
	c := s.calls.Get().(*call)
	c.script = sc
	c.args = [6]any{"evalsha", sc.shaArg, 1, key, val}
	c.nargs = 5
	if ms != 0 {
		c.args[5] = ms
		c.nargs = 6
	}

	s.mu.Lock()
	if s.senders < s.maxInFlight {
		s.senders++
		s.mu.Unlock()
		c.batch = append(c.batch, c)
		return s.lead(ctx, c)
	}
	c.state = queued
	s.queue = append(s.queue, c)
	s.mu.Unlock()

	select {
	case lead := <-c.wake:
		if !lead {
			return s.answer(c)
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.leave(c)
			s.mu.Unlock()
			return 0, ctx.Err()
		}
		s.take(c)
		s.mu.Unlock()
		return s.lead(ctx, c)
	case <-ctx.Done():
		s.mu.Lock()
		s.leave(c)
		s.mu.Unlock()
		// c is not reused: a leader may still set its answer.
		return 0, ctx.Err()
	}
}

// leave takes c, whose caller's context ended, out of the queue if it is
// still there, and passes the lead on if c had it. The caller holds s.mu.
func (s *Store) leave(c *call) {
	if c.state == sent {
		return
	}
	i := slices.Index(s.queue, c)
	s.queue = slices.Delete(s.queue, i, i+1)
	if c.state == leading {
		s.handOver()
	}
}

// take moves into c.batch c, which leads, and the oldest queued calls not
// told to lead, up to s.maxBatch. The caller holds s.mu.
func (s *Store) take(c *call) {
	kept := s.queue[:0]
	for _, q := range s.queue {
		switch {
		case q == c:
		case q.state == queued && len(c.batch) < s.maxBatch-1:
			c.batch = append(c.batch, q)
		default:
			kept = append(kept, q)
			continue
		}
		q.state = sent
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	c.batch = append(c.batch, c)
}

// handOver tells the oldest queued call not yet told to lead to send the next
// batch; when there is none, the caller's turn to send is given up. The
// caller holds s.mu.
func (s *Store) handOver() {
	for _, q := range s.queue {
		if q.state == queued {
			q.state = leading
			q.wake <- true
			return
		}
	}
	s.senders--
}

// lead sends c.batch, of which c is a member, hands the store over, passes
// the other members their answers and returns c's.
func (s *Store) lead(ctx context.Context, c *call) (int64, error) {
	s.exec(context.WithoutCancel(ctx), c.batch)
	s.mu.Lock()
	s.handOver()
	s.mu.Unlock()
	for _, b := range c.batch {
		if b != c {
			b.wake <- false
		}
	}
	clear(c.batch)
	c.batch = c.batch[:0]
	return s.answer(c)
}

// answer returns c's answer and c to the pool.
func (s *Store) answer(c *call) (int64, error) {
	n, err := c.n, c.err
	c.script, c.args, c.err = nil, [6]any{}, nil
	s.calls.Put(c)
	return n, err
}

// exec runs batch and sets each call's answer. Calls that fail with NOSCRIPT,
// because the server's script cache was flushed or the server is new, are
// sent again after SCRIPT LOAD of their scripts, and once more by EVAL (which
// needs no cache) if that did not help or SCRIPT LOAD was refused.
func (s *Store) exec(ctx context.Context, batch []*call) {
	s.send(ctx, batch)
	retry := noScript(batch, nil)
	if len(retry) == 0 {
		return
	}
	loaded := true
	for i, c := range retry {
		if slices.IndexFunc(retry[:i], func(r *call) bool { return r.script == c.script }) >= 0 {
			continue // loaded already
		}
		if err := s.client.ScriptLoad(ctx, c.script.src).Err(); err != nil {
			loaded = false
		}
	}
	if loaded {
		s.send(ctx, retry)
		retry = noScript(retry, retry[:0])
	}
	for _, c := range retry {
		c.args[0], c.args[1] = "eval", c.script.srcArg
	}
	s.send(ctx, retry)
}

// noScript appends to dst the calls of batch that failed with NOSCRIPT.
func noScript(batch, dst []*call) []*call {
	for _, c := range batch {
		if c.err != nil && (errors.Is(c.err, redis.ErrNoScript) || redis.HasErrorPrefix(c.err, "NOSCRIPT")) {
			dst = append(dst, c)
		}
	}
	return dst
}

// send runs calls in one round trip, in a pipeline unless there is just one,
// and sets each call's answer. A call that got no reply of its own gets the
// error of the round trip.
func (s *Store) send(ctx context.Context, calls []*call) {
	if len(calls) == 0 {
		return
	}
	for _, c := range calls {
		c.cmd = redis.NewCmd(ctx, c.args[:c.nargs]...)
		c.cmd.SetFirstKeyPos(3)
	}
	var err error
	if len(calls) == 1 {
		err = s.client.Process(ctx, calls[0].cmd)
	} else {
		pipe := s.client.Pipeline()
		for _, c := range calls {
			_ = pipe.Process(ctx, c.cmd)
		}
		_, err = pipe.Exec(ctx)
	}
	for _, c := range calls {
		c.n, c.err = c.cmd.Int64()
		if c.err != nil && c.cmd.Err() == nil && err != nil {
			c.err = err
		}
		c.cmd = nil
	}
}
