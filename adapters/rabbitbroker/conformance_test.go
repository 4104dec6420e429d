package rabbitbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// maxSize is the publish limit the harness declares: small, so the too-large
// case is quick.
const maxSize = 256 << 10

func TestConformance(t *testing.T) {
	uri := testenv.AMQPURL(t)
	opts := &rabbitbroker.Options{MaxMessageSize: maxSize}
	open := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 30*time.Second)
	}
	conformance.Run(t, conformance.Harness{
		Capabilities:   broker.Capabilities{FanOut: true, OrderedByKey: true},
		MaxMessageSize: maxSize,
		NewPublisher: func(t *testing.T) (broker.Publisher, error) {
			ctx, cancel := open()
			defer cancel()
			return rabbitbroker.NewPublisher(ctx, uri, opts)
		},
		NewConsumer: func(t *testing.T, o broker.ConsumerOptions) (broker.Consumer, error) {
			ctx, cancel := open()
			defer cancel()
			c, err := rabbitbroker.NewConsumer(ctx, uri, opts, &o)
			if err != nil {
				return nil, err
			}
			return rabbitbroker.Tidy(t, uri, c), nil
		},
		// Publishing declares the topology, so a fresh name is all a case needs.
		NewTopic: func(t *testing.T) string {
			topic := conformance.RandomName("rmq")
			rabbitbroker.DeleteTopicAfter(t, uri, topic)
			return topic
		},
	})
}
