package compare

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/internal/sidebyside"
	"github.com/brokerkit/broker/internal/testenv"
)

// prefetch is the broker-side prefetch in flight to the consumer in total:
// brokerkit sets 4 x Concurrency on its one channel; Watermill gets the same
// total over its channels.
const prefetch = 4 * concurrency

// randomName returns prefix and 12 random hex digits: a fresh queue, exchange
// or topic name per run.
func randomName(prefix string) string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return prefix + "-" + hex.EncodeToString(r[:])
}

// rabbit is a node to benchmark against, with a connection for setup and
// clean-up.
type rabbit struct {
	uri  string
	conn *amqp.Connection
}

func rabbitSetup(b testing.TB) *rabbit {
	uri := testenv.AMQPURL(b)
	conn, err := amqp.Dial(uri)
	if err != nil {
		b.Fatalf("RabbitMQ: %v", err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return &rabbit{uri: uri, conn: conn}
}

// brokerkitTopic returns a fresh topic and deletes, after the run, what
// rabbitbroker declares for it: the topic exchange, its default group's quorum
// queue, and the dead-letter exchange and queue.
func (r *rabbit) brokerkitTopic(b *testing.B) string {
	topic := randomName("cmp-bk")
	dlq := broker.DeadLetterTopic(topic)
	r.deleteAfter(b, []string{rabbitbroker.QueueName(topic, broker.DefaultGroup), rabbitbroker.QueueName(dlq, broker.DefaultGroup)}, []string{topic, dlq})
	return topic
}

// watermillTopic returns a fresh topic and Watermill's configuration for it,
// and deletes its exchange and queue after the run.
func (r *rabbit) watermillTopic(b *testing.B) (string, wamqp.Config) {
	topic := randomName("cmp-wm")
	cfg := watermillAMQPConfig(r.uri)
	r.deleteAfter(b, []string{cfg.Queue.GenerateName(topic)}, []string{topic})
	return topic, cfg
}

// watermillQueue is watermillTopic with the topic's queue declared and bound,
// as a subscriber would: watermill-amqp's publisher declares only the
// exchange, and messages published before the queue exists are dropped.
func (r *rabbit) watermillQueue(b *testing.B) (string, wamqp.Config) {
	topic, cfg := r.watermillTopic(b)
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.SubscribeInitialize(topic); err != nil {
		b.Fatal(err)
	}
	_ = sub.Close()
	return topic, cfg
}

// watermillAMQPConfig is watermill-amqp's durable pub/sub configuration made
// to match rabbitbroker's: a durable topic exchange named after the topic, a
// durable quorum queue "<topic>.default" bound with "#", persistent messages,
// mandatory publishing, publisher confirms, one pooled channel per publishing
// goroutine, and the same total prefetch over its consumers.
func watermillAMQPConfig(uri string) wamqp.Config {
	cfg := wamqp.NewDurablePubSubConfig(uri, func(topic string) string { return topic + "." + broker.DefaultGroup })
	cfg.Exchange.Type = "topic"
	cfg.QueueBind.GenerateRoutingKey = func(string) string { return "#" }
	cfg.Queue.Arguments = amqp.Table{"x-queue-type": "quorum"}
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.Mandatory = true
	cfg.Publish.ChannelPoolSize = publishers
	cfg.Consume.Qos.PrefetchCount = prefetch / concurrency
	return cfg
}

func (r *rabbit) deleteAfter(b testing.TB, queues, exchanges []string) {
	b.Cleanup(func() {
		ch, err := r.conn.Channel()
		if err != nil {
			b.Logf("clean-up: %v", err)
			return
		}
		defer ch.Close()
		for _, q := range queues {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				b.Logf("clean-up: queue %s: %v", q, err)
				return
			}
		}
		for _, x := range exchanges {
			if err := ch.ExchangeDelete(x, false, false); err != nil {
				b.Logf("clean-up: exchange %s: %v", x, err)
				return
			}
		}
	})
}

// brokerkitPublish returns a send function for publishN: k messages in one
// Publish call.
func brokerkitPublish(p broker.Publisher, topic string) func(ctx context.Context, k int) error {
	return func(ctx context.Context, k int) error {
		msgs := make([]*broker.Message, k)
		for i := range msgs {
			msgs[i] = &broker.Message{Body: body}
		}
		return p.Publish(ctx, topic, msgs...)
	}
}

// watermillPublish is brokerkitPublish for a Watermill publisher, which takes
// no context.
func watermillPublish(p message.Publisher, topic string) func(ctx context.Context, k int) error {
	return func(_ context.Context, k int) error { return p.Publish(topic, watermillBatch(k)...) }
}

func (r *rabbit) brokerkitPublisher(b *testing.B) broker.Publisher {
	p, err := rabbitbroker.NewPublisher(context.Background(), r.uri, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

func watermillAMQPPublisher(b *testing.B, cfg wamqp.Config) *wamqp.Publisher {
	p, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

// BenchmarkRabbitPublish: `messages` confirmed, persistent 256-byte messages into a
// quorum queue, by 8 goroutines calling Publish with 64 messages each. The
// topology exists and one message went through before the timer starts.
//
//   - brokerkit: rabbitbroker with its defaults (4 channels, up to 256
//     unconfirmed messages each).
//   - watermill: watermill-amqp with ConfirmDelivery and a pool of 8 channels;
//     Publish waits for each message's confirm before sending the next.
func BenchmarkRabbitPublish(b *testing.B) { rabbitPublish(b, publishAll) }

// BenchmarkRabbitPublishOne: one message per Publish call, one call at a
// time: the latency of a lone confirmed publish (msgs/s is its inverse).
// Same configurations as BenchmarkRabbitPublish.
func BenchmarkRabbitPublishOne(b *testing.B) { rabbitPublish(b, publishOne) }

// rabbitPublish times each side's publisher with measure (publishAll or
// publishOne), on a new topic a round.
func rabbitPublish(b *testing.B, measure func(*testing.B, func(ctx context.Context, k int) error) float64) {
	r := rabbitSetup(b)
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "watermill", Run: func(b *testing.B) float64 {
			topic, cfg := r.watermillQueue(b)
			return measure(b, watermillPublish(watermillAMQPPublisher(b, cfg), topic))
		}},
		sidebyside.Case{Name: "brokerkit", Run: func(b *testing.B) float64 {
			topic := r.brokerkitTopic(b)
			return measure(b, brokerkitPublish(r.brokerkitPublisher(b), topic))
		}},
	)
}

// BenchmarkRabbitEndToEnd: a consumer with a no-op handler and 16 handlers
// at once runs (a warm-up message went through), then `messages` messages are
// published as in BenchmarkRabbitPublish, and the time runs until the last
// was handled.
//
//   - brokerkit: rabbitbroker consumer with Concurrency 16 (one channel,
//     prefetch 64, grouped acks).
//   - watermill: 16 subscriptions of one watermill-amqp Subscriber on the
//     queue (each its own channel with prefetch 4, handing over one message at
//     a time and acking it before the next), each read by one goroutine that
//     calls the handler and Acks. A watermill-amqp subscription handles
//     messages one at a time, so this is how it gets 16 at once.
func BenchmarkRabbitEndToEnd(b *testing.B) {
	r := rabbitSetup(b)
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "watermill", Run: func(b *testing.B) float64 {
			topic, cfg := r.watermillTopic(b)
			sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cnt := newCounter(messages)
			for range concurrency {
				msgs, err := sub.Subscribe(ctx, topic)
				if err != nil {
					b.Fatal(err)
				}
				drain(msgs, 1, cnt)
			}
			publish := watermillPublish(watermillAMQPPublisher(b, cfg), topic)
			return cnt.endToEnd(b, publish)
		}},
		sidebyside.Case{Name: "brokerkit", Run: func(b *testing.B) float64 {
			topic := r.brokerkitTopic(b)
			publish := brokerkitPublish(r.brokerkitPublisher(b), topic)
			c, err := rabbitbroker.NewConsumer(context.Background(), r.uri, nil, &broker.ConsumerOptions{Concurrency: concurrency})
			if err != nil {
				b.Fatal(err)
			}
			return consumeEndToEnd(b, c, topic, newCounter(messages), publish)
		}},
	)
}
