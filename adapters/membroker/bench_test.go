package membroker_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
)

var body256 = make([]byte, 256)

func newBroker(b *testing.B) *membroker.Broker {
	br, err := membroker.New(&membroker.Options{MaxQueued: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	return br
}

// BenchmarkPublish measures one 256-byte message per Publish call.
func BenchmarkPublish(b *testing.B) {
	p := newBroker(b).NewPublisher()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Publish(ctx, "bench", &broker.Message{Body: body256}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkEndToEnd publishes b.N messages in batches of 100 and consumes them
// with 4 handlers; allocs/op is per message, publish and delivery included.
func BenchmarkEndToEnd(b *testing.B) {
	br := newBroker(b)
	p := br.NewPublisher()
	c, err := br.NewConsumer(&broker.ConsumerOptions{Concurrency: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var handled atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	go func() {
		_ = c.Consume(ctx, "e2e", func(context.Context, *broker.Message) error {
			if handled.Add(1) == target {
				close(done)
			}
			return nil
		})
	}()
	b.ReportAllocs()
	b.ResetTimer()
	batch := make([]*broker.Message, 0, 100)
	for i := 0; i < b.N; i++ {
		batch = append(batch, &broker.Message{Body: body256})
		if len(batch) == cap(batch) || i == b.N-1 {
			if err := p.Publish(ctx, "e2e", batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	<-done
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
