package dedupebench

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/conformance"
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

// mem: one in-memory broker whose groups may hold every backlog.

type memTarget struct {
	br  *membroker.Broker
	pub broker.Publisher
}

func openMem(b *testing.B) target {
	br, err := membroker.New(&membroker.Options{MaxQueued: 1 << 30})
	must(b, err)
	pub := br.NewPublisher()
	b.Cleanup(func() { _ = pub.Close() })
	return &memTarget{br: br, pub: pub}
}

func (t *memTarget) topic(*testing.B) (string, func()) {
	return conformance.RandomName("dedupebench"), func() {}
}

func (t *memTarget) publisher() broker.Publisher { return t.pub }

func (t *memTarget) consumer(b *testing.B, opts *broker.ConsumerOptions) broker.Consumer {
	c, err := t.br.NewConsumer(opts)
	must(b, err)
	return c
}

// rabbitmq: quorum queues as the adapter declares them.

type rabbitTarget struct {
	uri string
	pub broker.Publisher
}

func openRabbit(b *testing.B) target {
	uri := testenv.AMQPURL(b)
	pub, err := rabbitbroker.NewPublisher(context.Background(), uri, nil)
	must(b, err)
	b.Cleanup(func() { _ = pub.Close() })
	return &rabbitTarget{uri: uri, pub: pub}
}

// topic returns a new name: publishing declares the exchange and the default
// group's queue (and their dead-letter pair), which remove deletes.
func (t *rabbitTarget) topic(b *testing.B) (string, func()) {
	topic := conformance.RandomName("dedupebench")
	return topic, func() {
		conn, err := amqp.Dial(t.uri)
		if err != nil {
			b.Logf("cleanup of %s: %v", topic, err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			b.Logf("cleanup of %s: %v", topic, err)
			return
		}
		defer ch.Close()
		for _, q := range []string{topic + "." + broker.DefaultGroup, topic + ".dlq." + broker.DefaultGroup} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		for _, x := range []string{topic, topic + ".dlq"} {
			_ = ch.ExchangeDelete(x, false, false)
		}
	}
}

func (t *rabbitTarget) publisher() broker.Publisher { return t.pub }

func (t *rabbitTarget) consumer(b *testing.B, opts *broker.ConsumerOptions) broker.Consumer {
	c, err := rabbitbroker.NewConsumer(context.Background(), t.uri, nil, opts)
	must(b, err)
	return c
}

// kafka: topics of 3 partitions, a new consumer group per case.

const kafkaPartitions = 3

type kafkaTarget struct {
	brokers []string
	kb      *kafkabroker.Broker
	pub     broker.Publisher
}

func openKafka(b *testing.B) target {
	brokers := testenv.KafkaBrokers(b)
	kb, err := kafkabroker.New(brokers, nil)
	must(b, err)
	pub := kb.NewPublisher()
	b.Cleanup(func() { _ = pub.Close() })
	return &kafkaTarget{brokers: brokers, kb: kb, pub: pub}
}

func (t *kafkaTarget) topic(b *testing.B) (string, func()) {
	topic := conformance.RandomName("dedupebench")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(b, t.kb.CreateTopic(ctx, topic, kafkaPartitions))
	return topic, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		c := &kafka.Client{Addr: kafka.TCP(t.brokers...), Transport: tr}
		if _, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic, topic + ".dlq"}}); err != nil {
			b.Logf("cleanup of %s: %v", topic, err)
		}
	}
}

func (t *kafkaTarget) publisher() broker.Publisher { return t.pub }

func (t *kafkaTarget) consumer(b *testing.B, opts *broker.ConsumerOptions) broker.Consumer {
	o := *opts
	o.Group = conformance.RandomName("g")
	c, err := t.kb.NewConsumer(&o)
	must(b, err)
	return c
}

// sqs: standard queues on ElasticMQ.

type sqsTarget struct {
	client *sqs.Client
	br     *sqsbroker.Broker
	pub    broker.Publisher
}

func openSQS(b *testing.B) target {
	endpoint := testenv.SQSEndpoint(b)
	client := sqs.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", ""),
	}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
	br, err := sqsbroker.New(client, nil)
	must(b, err)
	pub := br.NewPublisher()
	b.Cleanup(func() { _ = pub.Close() })
	return &sqsTarget{client: client, br: br, pub: pub}
}

// topic creates the queue (and its dead-letter queue), which remove deletes.
func (t *sqsTarget) topic(b *testing.B) (string, func()) {
	topic := conformance.RandomName("dedupebench")
	ctx := context.Background()
	must(b, t.br.CreateQueue(ctx, topic, ""))
	return topic, func() {
		for _, q := range []string{topic, topic + "-dlq"} {
			if out, err := t.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(q)}); err == nil {
				_, _ = t.client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
			}
		}
	}
}

func (t *sqsTarget) publisher() broker.Publisher { return t.pub }

func (t *sqsTarget) consumer(b *testing.B, opts *broker.ConsumerOptions) broker.Consumer {
	c, err := t.br.NewConsumer(opts)
	must(b, err)
	return c
}
