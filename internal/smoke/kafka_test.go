package smoke

import (
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker/internal/testenv"
)

// TestKafkaProduceConsume creates a topic, writes one message with acks=all and reads
// it back through a consumer group, which also exercises the group coordinator and
// the __consumer_offsets topic.
func TestKafkaProduceConsume(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	ctx := deadline(t, 60*time.Second)
	topic := uniqueName(t)

	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	created, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}},
	})
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	if err := created.Errors[topic]; err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx := deadline(t, 10*time.Second)
		client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})

	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Hash{},
		BatchTimeout: 10 * time.Millisecond,
	}
	t.Cleanup(func() { w.Close() })
	want := kafka.Message{Key: []byte("key-1"), Value: []byte("hello " + topic),
		Headers: []kafka.Header{{Key: "smoke", Value: []byte("1")}}}
	// A new topic may have no leader for a moment; the writer reports that as a
	// retriable error, so try again until the deadline.
	for {
		err = w.WriteMessages(ctx, want)
		if err == nil {
			break
		}
		if !isRetriable(err) || ctx.Err() != nil {
			t.Fatalf("write: %v", err)
		}
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     brokers,
		GroupID:     topic,
		Topic:       topic,
		StartOffset: kafka.FirstOffset,
		MaxWait:     250 * time.Millisecond,
	})
	t.Cleanup(func() { r.Close() })
	got, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got.Key) != string(want.Key) || string(got.Value) != string(want.Value) {
		t.Errorf("got key %q value %q, want key %q value %q", got.Key, got.Value, want.Key, want.Value)
	}
	if len(got.Headers) != 1 || got.Headers[0].Key != "smoke" {
		t.Errorf("got headers %v, want smoke=1", got.Headers)
	}
	if err := r.CommitMessages(ctx, got); err != nil {
		t.Fatalf("commit offset: %v", err)
	}
}

func isRetriable(err error) bool {
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		return kerr.Temporary()
	}
	var werr kafka.WriteErrors
	if errors.As(err, &werr) {
		for _, e := range werr {
			if e != nil && !isRetriable(e) {
				return false
			}
		}
		return true
	}
	return false
}
