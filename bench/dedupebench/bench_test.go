package dedupebench

import (
	"context"
	"flag"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/internal/sidebyside"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The settings every case shares.
const (
	bodySize   = 256
	publishers = 8 // goroutines publishing the backlog
	// rounds is how many times every case runs, interleaved: the machine is
	// shared and noisy, so each dedupe case is compared with the bare case of
	// its own round, and the medians are reported.
	rounds = 5
	// caseTimeout bounds one case's consumption.
	caseTimeout = 3 * time.Minute
	ttl         = 10 * time.Minute
)

var body = make([]byte, bodySize)

// handlers is the consumer's Concurrency in every case. Dedupe over a remote
// store is I/O a handler waits for, so its rate grows with handlers where the
// bare consumer's does not: the README gives both 16 and 64.
var handlers = flag.Int("handlers", 16, "the consumer's Concurrency in every case")

// adapter is a broker under test: how to make a topic with nothing in it,
// publish to it and consume from it.
type adapter struct {
	name string
	// messages is the backlog of every case on this adapter, sized so that a
	// case lasts about a second or more on the slowest store.
	messages int
	// batch is how many messages one Publish call carries.
	batch int
	open  func(b *testing.B) target
}

// target is an opened adapter.
type target interface {
	// topic returns a new, empty topic, and a func that deletes it with
	// whatever the library created for it.
	topic(b *testing.B) (name string, remove func())
	publisher() broker.Publisher
	consumer(b *testing.B, opts *broker.ConsumerOptions) broker.Consumer
}

// store is one way of running the handler: bare (open returns nil) or behind
// Dedupe over a store. open returns a store with nothing in it; the time it
// takes is not measured.
type store struct {
	name string
	open func(b *testing.B) idempotency.Store
}

// BenchmarkConsume measures, on each adapter, the consumption of a backlog by
// a consumer with Concurrency -handlers (16) and a handler that does nothing: bare, and
// behind idempotency.Dedupe over the memory, Redis and PostgreSQL stores.
// Each adapter is one benchmark run whatever -benchtime says (its ns/op is
// the run's wall time); package sidebyside runs the cases in interleaved
// rounds (bare and memory, whose ratio is the finest, always side by side),
// logs each round's rates and reports the median rate of the bare cases and,
// for each store, the median of its ratios to bare ("<store>/bare").
func BenchmarkConsume(b *testing.B) {
	stores := []store{
		{"bare", func(*testing.B) idempotency.Store { return nil }},
		{"memory", func(*testing.B) idempotency.Store { return idempotency.NewMemoryStore(nil) }},
		{"redis", openRedis(b)},
		{"postgres", openPostgres(b)},
	}
	for _, a := range adapters {
		b.Run(a.name, func(b *testing.B) {
			t := a.open(b)
			cases := make([]sidebyside.Case, len(stores))
			for i, s := range stores {
				cases[i] = sidebyside.Case{Name: s.name, Run: func(b *testing.B) float64 { return consume(b, a, t, s) }}
			}
			sidebyside.Compare(b, rounds, cases[0], cases[1:]...)
		})
	}
}

// consume publishes a.messages messages to a new topic, consumes them with
// the handler behind s, and returns the rate from the start of the first
// handler call to the end of the last, so that a consumer's start (a Kafka
// group join) does not count.
func consume(b *testing.B, a adapter, t target, s store) float64 {
	topic, remove := t.topic(b)
	defer remove()
	publish(b, t.publisher(), topic, a.messages, a.batch)
	var h broker.Handler = func(context.Context, *broker.Message) error { return nil }
	if st := s.open(b); st != nil {
		h = idempotency.Dedupe(st, &idempotency.DedupeOptions{TTL: ttl})(h)
	}
	c := t.consumer(b, &broker.ConsumerOptions{Concurrency: *handlers})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var handled, first, last atomic.Int64 // first and last in Unix nanoseconds
	done := make(chan struct{})
	failed := make(chan error, 1)
	counted := func(ctx context.Context, m *broker.Message) error {
		if first.Load() == 0 { // no clock read per message: it would count on both sides
			first.CompareAndSwap(0, time.Now().UnixNano())
		}
		if err := h(ctx, m); err != nil {
			select {
			case failed <- err:
			default:
			}
			return err
		}
		if handled.Add(1) == int64(a.messages) {
			last.Store(time.Now().UnixNano())
			close(done)
		}
		return nil
	}
	go func() {
		if err := c.Consume(ctx, topic, counted); err != nil && ctx.Err() == nil {
			select {
			case failed <- err:
			default:
			}
		}
	}()
	select {
	case <-done:
	case err := <-failed:
		b.Fatalf("%s: after %d of %d messages: %v", s.name, handled.Load(), a.messages, err)
	case <-time.After(caseTimeout):
		b.Fatalf("%s: %d of %d messages after %v", s.name, handled.Load(), a.messages, caseTimeout)
	}
	return float64(a.messages) / time.Duration(last.Load()-first.Load()).Seconds()
}

// publish publishes n messages to topic with publishers goroutines, each
// sending batches of batch.
func publish(b *testing.B, p broker.Publisher, topic string, n, batch int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				start := int(next.Add(int64(batch))) - batch
				if start >= n {
					return
				}
				msgs := make([]*broker.Message, min(batch, n-start))
				for i := range msgs {
					msgs[i] = &broker.Message{Body: body}
				}
				if err := p.Publish(context.Background(), topic, msgs...); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}
