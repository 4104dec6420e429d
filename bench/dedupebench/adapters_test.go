package dedupebench

import (
	"context"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/driver"
	"github.com/brokerkit/broker/internal/brokertest"
	"github.com/brokerkit/broker/internal/testenv"
)

// adapters are the brokers measured, each with its default options. The
// backlogs are smaller where consumption is slower, to keep the whole run
// within a few minutes.
var adapters = []adapter{
	{name: "mem", messages: 50_000, batch: 1000, open: openMem},
	{name: "rabbitmq", messages: 20_000, batch: 64, open: openRabbit},
	{name: "kafka", messages: 50_000, batch: 100, open: openKafka},
	{name: "sqs", messages: 10_000, batch: 10, open: openSQS},
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// brokerTarget is an opened adapter: one publisher, and a new topic and
// consumer for each case.
type brokerTarget struct {
	// tg deletes each case's topic, with whatever the adapter created for it.
	tg          brokertest.Target
	pub         broker.Publisher
	newConsumer func(opts *broker.ConsumerOptions) (*driver.Consumer, error)
	// create creates a topic; nil where publishing to it does.
	create func(ctx context.Context, topic string) error
	// ownGroup puts each consumer in a new group, which reads the topic from
	// its beginning.
	ownGroup bool
}

// newTarget returns a target that publishes with pub, closed after b.
func newTarget(b *testing.B, tg brokertest.Target, pub broker.Publisher,
	newConsumer func(*broker.ConsumerOptions) (*driver.Consumer, error)) *brokerTarget {
	b.Cleanup(func() { _ = pub.Close() })
	return &brokerTarget{tg: tg, pub: pub, newConsumer: newConsumer}
}

func (t *brokerTarget) topic(b *testing.B) (string, func()) {
	topic := conformance.RandomName("dedupebench")
	if t.create != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		must(b, t.create(ctx, topic))
	}
	return topic, func() { t.tg.Delete(b, topic) }
}

func (t *brokerTarget) publisher() broker.Publisher { return t.pub }

func (t *brokerTarget) consumer(b *testing.B, opts *broker.ConsumerOptions) broker.Consumer {
	o := *opts
	if t.ownGroup {
		o.Group = conformance.RandomName("g")
	}
	c, err := t.newConsumer(&o)
	must(b, err)
	return c
}

// openMem opens one in-memory broker whose groups may hold every backlog.
func openMem(b *testing.B) target {
	br, err := membroker.New(&membroker.Options{MaxQueued: 1 << 30})
	must(b, err)
	return newTarget(b, brokertest.Mem, br.NewPublisher(), br.NewConsumer)
}

// openRabbit opens RabbitMQ with quorum queues as the adapter declares them:
// publishing declares the exchange and the default group's queue, and their
// dead-letter pair.
func openRabbit(b *testing.B) target {
	uri := testenv.AMQPURL(b)
	pub, err := rabbitbroker.NewPublisher(context.Background(), uri, nil)
	must(b, err)
	return newTarget(b, brokertest.RabbitMQ, pub, func(opts *broker.ConsumerOptions) (*driver.Consumer, error) {
		return rabbitbroker.NewConsumer(context.Background(), uri, nil, opts)
	})
}

// kafkaPartitions is the partition count of the Kafka topics.
const kafkaPartitions = 3

// openKafka opens Kafka with topics of 3 partitions and a new consumer group
// per case.
func openKafka(b *testing.B) target {
	kb, err := kafkabroker.New(testenv.KafkaBrokers(b), nil)
	must(b, err)
	t := newTarget(b, brokertest.Kafka, kb.NewPublisher(), kb.NewConsumer)
	t.create = func(ctx context.Context, topic string) error { return kb.CreateTopic(ctx, topic, kafkaPartitions) }
	t.ownGroup = true
	return t
}

// openSQS opens ElasticMQ with standard queues, each created with its
// dead-letter queue.
func openSQS(b *testing.B) target {
	br, err := sqsbroker.New(brokertest.SQSClient(b), nil)
	must(b, err)
	t := newTarget(b, brokertest.SQS, br.NewPublisher(), br.NewConsumer)
	t.create = func(ctx context.Context, topic string) error { return br.CreateQueue(ctx, topic, "") }
	return t
}
