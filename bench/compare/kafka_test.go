package compare

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/internal/sidebyside"
	"github.com/brokerkit/broker/internal/testenv"
)

// partitions is the partition count of every topic. watermill-kafka handles
// the messages of one partition one at a time, so it runs partitions handlers
// at once; brokerkit is given the same Concurrency.
const partitions = 3

type kafkaEnv struct {
	brokers []string
	kb      *kafkabroker.Broker
	admin   *kafka.Client // for readiness checks and clean-up
}

func kafkaSetup(b *testing.B) *kafkaEnv {
	brokers := testenv.KafkaBrokers(b)
	kb, err := kafkabroker.New(brokers, nil)
	if err != nil {
		b.Fatal(err)
	}
	tr := &kafka.Transport{}
	b.Cleanup(tr.CloseIdleConnections)
	return &kafkaEnv{brokers: brokers, kb: kb, admin: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}}
}

// topic creates a fresh topic of 3 partitions (and brokerkit's dead-letter
// topic beside it) for either side, and deletes both after the run.
func (e *kafkaEnv) topic(b *testing.B) string {
	topic := randomName("cmp")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.kb.CreateTopic(ctx, topic, partitions); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := e.admin.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic, broker.DeadLetterTopic(topic)}}); err != nil {
			b.Logf("clean-up: topics: %v", err)
		}
	})
	return topic
}

// deleteGroupAfter deletes the consumer group id after the run, when its
// member has left.
func (e *kafkaEnv) deleteGroupAfter(b *testing.B, id string) {
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := e.admin.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: []string{id}})
		if err == nil {
			err = res.Errors[id]
		}
		if err != nil {
			b.Logf("clean-up: group %s: %v", id, err)
		}
	})
}

// watermillKafkaPublisher is watermill-kafka's publisher with its default
// Sarama configuration, except acks=all (brokerkit's default; Sarama's is
// the leader's ack alone).
func watermillKafkaPublisher(b *testing.B, brokers []string) *wkafka.Publisher {
	cfg := wkafka.DefaultSaramaSyncPublisherConfig()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	p, err := wkafka.NewPublisher(wkafka.PublisherConfig{
		Brokers: brokers, Marshaler: wkafka.DefaultMarshaler{}, OverwriteSaramaConfig: cfg,
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

// BenchmarkKafkaPublish: `messages` 256-byte messages, acks=all, by 8 goroutines
// calling Publish with 64 messages each, into a topic of 3 partitions. One
// message went through before the timer starts.
//
//   - brokerkit: kafkabroker with its defaults (kafka-go Writer, 200 µs batch
//     window while other publishes are in flight, batches of up to 500).
//   - watermill: watermill-kafka's Publisher: a Sarama SyncProducer, which
//     sends the messages of a Publish call one at a time, each waiting for
//     its ack.
func BenchmarkKafkaPublish(b *testing.B) { kafkaPublish(b, publishAll) }

// BenchmarkKafkaPublishOne: one message per Publish call, one call at a
// time: the latency of a lone publish with acks=all (msgs/s is its
// inverse). Same configurations as BenchmarkKafkaPublish.
func BenchmarkKafkaPublishOne(b *testing.B) { kafkaPublish(b, publishOne) }

// kafkaPublish times each side's publisher with measure (publishAll or
// publishOne), on a new topic a round.
func kafkaPublish(b *testing.B, measure func(*testing.B, func(ctx context.Context, k int) error) float64) {
	e := kafkaSetup(b)
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "watermill", Run: func(b *testing.B) float64 {
			topic := e.topic(b)
			return measure(b, watermillPublish(watermillKafkaPublisher(b, e.brokers), topic))
		}},
		sidebyside.Case{Name: "brokerkit", Run: func(b *testing.B) float64 {
			topic := e.topic(b)
			p := e.kb.NewPublisher()
			defer p.Close()
			return measure(b, brokerkitPublish(p, topic))
		}},
	)
}

// BenchmarkKafkaEndToEnd: a consumer-group member with a no-op handler runs
// (a warm-up message went through, so the group is joined), then
// `messages` messages are published as in BenchmarkKafkaPublish; the time runs until
// the last was handled.
//
//   - brokerkit: kafkabroker consumer with Concurrency 3.
//   - watermill: watermill-kafka Subscriber in a consumer group (Sarama,
//     default configuration, starting at the oldest offset), which hands over
//     one message per partition at a time; 3 goroutines call the handler and
//     Ack.
func BenchmarkKafkaEndToEnd(b *testing.B) {
	e := kafkaSetup(b)
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "watermill", Run: func(b *testing.B) float64 {
			group := randomName("g")
			topic := e.topic(b)
			e.deleteGroupAfter(b, group)
			cfg := wkafka.DefaultSaramaSubscriberConfig()
			cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
			sub, err := wkafka.NewSubscriber(wkafka.SubscriberConfig{
				Brokers: e.brokers, Unmarshaler: wkafka.DefaultMarshaler{}, ConsumerGroup: group, OverwriteSaramaConfig: cfg,
			}, watermill.NopLogger{})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			msgs, err := sub.Subscribe(ctx, topic)
			if err != nil {
				b.Fatal(err)
			}
			cnt := newCounter(messages)
			drain(msgs, partitions, cnt)
			publish := watermillPublish(watermillKafkaPublisher(b, e.brokers), topic)
			return cnt.endToEnd(b, publish)
		}},
		sidebyside.Case{Name: "brokerkit", Run: func(b *testing.B) float64 {
			group := randomName("g")
			topic := e.topic(b)
			e.deleteGroupAfter(b, kafkabroker.GroupID(group, topic))
			p := e.kb.NewPublisher()
			defer p.Close()
			publish := brokerkitPublish(p, topic)
			c, err := e.kb.NewConsumer(&broker.ConsumerOptions{Group: group, Concurrency: partitions})
			if err != nil {
				b.Fatal(err)
			}
			return consumeEndToEnd(b, c, topic, newCounter(messages), publish)
		}},
	)
}
