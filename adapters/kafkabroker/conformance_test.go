package kafkabroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// newBroker returns a Broker on the test cluster with opts (nil: defaults).
func newBroker(t testing.TB, opts *kafkabroker.Options) *kafkabroker.Broker {
	t.Helper()
	b, err := kafkabroker.New(testenv.KafkaBrokers(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newTopic creates a fresh topic and its dead-letter topic with partitions
// partitions, and deletes both when the test ends (after its consumers and
// publishers closed: cleanups run last in, first out).
func newTopic(t testing.TB, b *kafkabroker.Broker, partitions int) string {
	t.Helper()
	topic := conformance.RandomName("kafka")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.CreateTopic(ctx, topic, partitions); err != nil {
		t.Fatalf("CreateTopic(%q): %v", topic, err)
	}
	brokers := testenv.KafkaBrokers(t)
	t.Cleanup(func() { deleteTopics(brokers, topic, topic+".dlq") })
	return topic
}

func deleteTopics(brokers []string, topics ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics})
}

func TestConformance(t *testing.T) {
	b := newBroker(t, nil)
	conformance.Run(t, conformance.Harness{
		// Every group id is its own Kafka consumer group (fan-out); a key maps
		// to one partition, which is one ordered log.
		Capabilities:   broker.Capabilities{FanOut: true, OrderedByKey: true},
		MaxMessageSize: b.MaxMessageSize(),
		NewTopic:       func(t *testing.T) string { return newTopic(t, b, 3) },
		NewPublisher: func(t *testing.T) (broker.Publisher, error) {
			return b.NewPublisher(), nil
		},
		NewConsumer: func(t *testing.T, o broker.ConsumerOptions) (broker.Consumer, error) {
			return b.NewConsumer(&o)
		},
	})
}
