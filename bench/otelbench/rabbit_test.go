package otelbench

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/brokerotel"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/brokertest"
	"github.com/brokerkit/broker/internal/testenv"
)

// BenchmarkConsumeRabbitMQ is BenchmarkConsume on the real RabbitMQ, with 16
// handlers: what instrumentation costs where a message costs what a broker
// makes it cost. The cases publish and consume b.N messages at once.
func BenchmarkConsumeRabbitMQ(b *testing.B) {
	uri := testenv.AMQPURL(b)
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			var opts []brokerotel.Option
			if s.opts != nil {
				opts = s.opts(b)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			topic := conformance.RandomName("otelbench")
			brokertest.RabbitMQ.DeleteAfter(b, topic)
			p, err := rabbitbroker.NewPublisher(ctx, uri, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			c, err := rabbitbroker.NewConsumer(ctx, uri, nil, &broker.ConsumerOptions{Concurrency: 16})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			var handled atomic.Int64
			done := make(chan struct{})
			target := int64(b.N)
			h := instrument(func(context.Context, *broker.Message) error {
				if handled.Add(1) == target {
					close(done)
				}
				return nil
			}, opts)
			go func() { _ = c.Consume(ctx, topic, h) }()
			headers := map[string]string{"traceparent": traceparent}
			b.ReportAllocs()
			b.ResetTimer()
			batch := make([]*broker.Message, 0, 100)
			for i := 0; i < b.N; i++ {
				batch = append(batch, &broker.Message{Body: body256, Headers: headers})
				if len(batch) == cap(batch) || i == b.N-1 {
					if err := p.Publish(ctx, topic, batch...); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			<-done
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
