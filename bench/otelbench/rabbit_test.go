package otelbench

import (
	"context"
	"testing"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
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
			ctx := context.Background()
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
			consumeAll(b, s, p, c, topic)
		})
	}
}
