package kafkabroker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// A Send with no other in flight goes through the lone Writer, which does not
// wait for a batch to fill; Sends made while others are in flight go through
// the batching Writer and share its batches.
func TestSenderLoneAndBatching(t *testing.T) {
	b, err := New(testenv.KafkaBrokers(t), &Options{CreateTopics: true, Partitions: 1, ReplicationFactor: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := newSender(b.a)
	defer s.Close()
	topic := conformance.RandomName("lone")
	t.Cleanup(func() {
		c := &kafka.Client{Addr: kafka.TCP(testenv.KafkaBrokers(t)...), Transport: &kafka.Transport{}}
		_, _ = c.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 3 {
		if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	if lone, batching := s.lone.Stats().Messages, s.batching.Stats().Messages; lone != 3 || batching != 0 {
		t.Fatalf("three Sends one after another: lone wrote %d, batching %d; want 3 and 0", lone, batching)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("y")}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	lone, batching := s.lone.Stats().Messages, s.batching.Stats().Messages
	if lone+batching != 320 || batching == 0 {
		t.Fatalf("16 concurrent senders of 20: lone wrote %d, batching %d; want 320 in all, some of them batched (Stats resets at each call)", lone, batching)
	}
}
