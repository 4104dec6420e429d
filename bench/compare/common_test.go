package compare

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/internal/testenv"
)

// The settings every benchmark shares, on both sides.
const (
	bodySize = 256
	// publishers goroutines publish at once, each sending batches of batch
	// messages per Publish call (both APIs take variadic messages).
	publishers = 8
	batch      = 64
	// concurrency is how many handlers run at once on each side, unless a
	// benchmark says otherwise.
	concurrency = 16
	// rounds is how many times each benchmark runs each side, interleaved:
	// the machine is shared and the brokers' speed drifts, so each brokerkit
	// run is compared with the Watermill run beside it (package sidebyside).
	rounds = 5
	// waitLimit bounds how long a run waits for its last message.
	waitLimit = 5 * time.Minute
)

var body = make([]byte, bodySize)

// The work of one round of one side (package sidebyside runs every side once
// a round, interleaved, and reports the medians of the per-round ratios).
const (
	// messages: enough for a second or more of the slower side on a broker.
	messages = 20_000
	// memMessages: the in-memory cases, which run ten to a hundred times faster.
	memMessages = 200_000
	// loneMessages: one-at-a-time publishes.
	loneMessages = 500
)

// timed runs work and returns its rate over n messages.
func timed(n int, work func()) float64 {
	start := time.Now()
	work()
	return float64(n) / time.Since(start).Seconds()
}

// publishN publishes n messages with publishers goroutines, each calling send
// with batches of up to batch messages. send gets the size of its batch.
func publishN(b *testing.B, n int, send func(ctx context.Context, k int) error) {
	publishGated(b, n, nil, send)
}

// publishGated is publishN that takes a token from gate (when not nil) before
// each batch; the consumer's counter puts one back per batch handled.
func publishGated(b *testing.B, n int, gate chan struct{}, send func(ctx context.Context, k int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				start := int(next.Add(batch)) - batch
				if start >= n {
					return
				}
				if gate != nil {
					<-gate
				}
				if err := send(context.Background(), min(batch, n-start)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow() // rather than wait for messages that were never sent
	}
}

// publishAll sends one message through send, then times publishN of
// `messages`: the msgs/s of a publisher whose connection and topology are
// warm.
func publishAll(b *testing.B, send func(ctx context.Context, k int) error) float64 {
	if err := send(context.Background(), 1); err != nil {
		b.Fatal(err)
	}
	return timed(messages, func() { publishN(b, messages, send) })
}

// publishOne sends loneMessages messages one after the other, after one
// untimed to set up the topology, and returns their rate: the inverse of a
// lone publish's latency.
func publishOne(b *testing.B, send func(ctx context.Context, k int) error) float64 {
	ctx := context.Background()
	if err := send(ctx, 1); err != nil {
		b.Fatal(err)
	}
	return timed(loneMessages, func() {
		for range loneMessages {
			if err := send(ctx, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// counter counts handled messages: the first is a warm-up that shows the
// consumer is running; done closes when n more were handled.
type counter struct {
	n          int64
	seen       atomic.Int64
	warm, done chan struct{}
	gate       chan struct{} // nil, or see newGatedCounter
}

func newCounter(n int) *counter {
	return &counter{n: int64(n), warm: make(chan struct{}), done: make(chan struct{})}
}

// newGatedCounter is a counter with a gate for publishGated that lets at most
// batches batches be published and not yet handled.
func newGatedCounter(n, batches int) *counter {
	c := newCounter(n)
	c.gate = make(chan struct{}, batches)
	for range batches {
		c.gate <- struct{}{}
	}
	return c
}

// add is the no-op handler's only work.
func (c *counter) add() {
	k := c.seen.Add(1)
	switch k {
	case 1:
		close(c.warm)
	case c.n + 1:
		close(c.done)
	}
	if c.gate != nil && k > 1 && (k-1)%batch == 0 {
		select {
		case c.gate <- struct{}{}:
		default: // the last batches: no publisher waits any more
		}
	}
}

// endToEnd publishes the warm-up message and waits until it is handled, then
// returns the rate of publishing the counter's n messages (through its gate,
// if it has one) until the last of them is handled.
func (c *counter) endToEnd(b *testing.B, publish func(ctx context.Context, k int) error) float64 {
	b.Helper()
	if err := publish(context.Background(), 1); err != nil {
		b.Fatal(err)
	}
	c.waitWarm(b)
	return timed(int(c.n), func() {
		publishGated(b, int(c.n), c.gate, publish)
		c.waitDone(b)
	})
}

// consumeEndToEnd consumes topic with c (closed after) into cnt with the
// no-op handler while cnt.endToEnd times publish.
func consumeEndToEnd(b *testing.B, c broker.Consumer, topic string, cnt *counter, publish func(ctx context.Context, k int) error) float64 {
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = c.Consume(ctx, topic, func(context.Context, *broker.Message) error { cnt.add(); return nil })
	}()
	return cnt.endToEnd(b, publish)
}

func (c *counter) waitWarm(b *testing.B) { c.wait(b, c.warm, "the warm-up message") }
func (c *counter) waitDone(b *testing.B) { c.wait(b, c.done, "the last message") }

func (c *counter) wait(b *testing.B, ch chan struct{}, what string) {
	b.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		b.Fatalf("no %s after %v: handled %d of %d", what, waitLimit, c.seen.Load(), c.n+1)
	}
}

func TestMain(m *testing.M) { testenv.Main(m) }
