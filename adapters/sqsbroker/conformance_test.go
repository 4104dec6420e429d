package sqsbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// client returns an SQS client for the test server: static credentials, as
// ElasticMQ accepts any, and region us-east-1.
func client(t testing.TB) *sqs.Client {
	endpoint := testenv.SQSEndpoint(t)
	return sqs.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("brokerkit", "brokerkit", ""),
	}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

func newBroker(t testing.TB, opts *sqsbroker.Options) (*sqsbroker.Broker, *sqs.Client) {
	c := client(t)
	b, err := sqsbroker.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

// newTopic creates a fresh queue and its dead-letter queue, and deletes both
// when the test ends.
func newTopic(t *testing.T, b *sqsbroker.Broker, c *sqs.Client, fifo bool) string {
	topic := conformance.RandomName("conf")
	if fifo {
		topic += ".fifo"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.CreateQueue(ctx, topic, ""); err != nil {
		t.Fatalf("CreateQueue(%q): %v", topic, err)
	}
	t.Cleanup(func() { deleteQueues(c, topic, topic+".dlq") })
	return topic
}

func deleteQueues(c *sqs.Client, topics ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, topic := range topics {
		name, _, err := sqsbroker.QueueName(topic)
		if err != nil {
			continue
		}
		if out, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)}); err == nil {
			_, _ = c.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
		}
	}
}

func harness(t *testing.T, fifo bool) conformance.Harness {
	b, c := newBroker(t, nil)
	return conformance.Harness{
		// SQS has no fan-out; only FIFO queues keep order per key.
		Capabilities:   broker.Capabilities{OrderedByKey: fifo},
		MaxMessageSize: b.MaxMessageSize(),
		// FIFO queues drop a message whose MessageDeduplicationId (its ID)
		// they saw in the last 5 minutes.
		DeduplicatesByID: fifo,
		NewPublisher: func(t *testing.T) (broker.Publisher, error) {
			return b.NewPublisher(), nil
		},
		NewConsumer: func(t *testing.T, o broker.ConsumerOptions) (broker.Consumer, error) {
			return b.NewConsumer(&o)
		},
		NewTopic: func(t *testing.T) string { return newTopic(t, b, c, fifo) },
	}
}

// TestConformanceStandard runs the suite on standard queues: FanOut and
// OrderPerKey are skipped, and OrderByKey must be refused at start.
func TestConformanceStandard(t *testing.T) {
	conformance.Run(t, harness(t, false))
}

// TestConformanceFIFO runs the suite on FIFO queues, which keep order per
// message group (the Key): only FanOut is skipped.
func TestConformanceFIFO(t *testing.T) {
	conformance.Run(t, harness(t, true))
}
