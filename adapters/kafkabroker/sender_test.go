package kafkabroker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// A Send with no other in flight goes through produceOne (one message) or the
// lone Writer, which does not wait for a batch to fill; Sends made while
// others are in flight go through the batching Writer and share its batches.
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
	// The first Send to a new topic may find it missing from the transport's
	// metadata cache, and go through the lone Writer, which refreshes it.
	if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("warm-up")}}); err != nil {
		t.Fatal(err)
	}
	s.produced.Store(0)
	_, _ = s.lone.Stats(), s.batching.Stats() // Stats resets the counts
	for range 3 {
		if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	if produced, lone, batching := s.produced.Load(), s.lone.Stats().Messages, s.batching.Stats().Messages; produced != 3 || lone != 0 || batching != 0 {
		t.Fatalf("three Sends of one message one after another: produceOne wrote %d, lone %d, batching %d; want 3, 0, 0", produced, lone, batching)
	}
	if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("x")}, {ID: broker.NewID(), Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if produced, lone, batching := s.produced.Load(), s.lone.Stats().Messages, s.batching.Stats().Messages; produced != 3 || lone != 2 || batching != 0 {
		t.Fatalf("a Send of two messages: produceOne wrote %d, lone %d, batching %d; want 3 (as before), 2, 0", produced, lone, batching)
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
	produced, lone, batching := s.produced.Load()-3, s.lone.Stats().Messages, s.batching.Stats().Messages
	if produced+lone+batching != 320 || batching == 0 {
		t.Fatalf("16 concurrent senders of 20: produceOne wrote %d, lone %d, batching %d; want 320 in all, some of them batched (Stats resets at each call)", produced, lone, batching)
	}
}

// A key lands on the same partition whether its message went alone through
// produceOne or in a batch through a Writer: the partition the murmur2
// balancer picks, as the Java client's default partitioner would.
func TestProduceOneKeepsKeyPartition(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	b, err := New(brokers, &Options{CreateTopics: true, Partitions: 3, ReplicationFactor: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := newSender(b.a)
	defer s.Close()
	topic := conformance.RandomName("key-partition")
	t.Cleanup(func() {
		c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
		_, _ = c.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := []string{"k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}
	// (See TestSenderLoneAndBatching.)
	if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Key: "warm-up", Body: []byte("warm-up")}}); err != nil {
		t.Fatal(err)
	}
	s.produced.Store(0)
	var batch []*broker.Message
	for _, k := range keys {
		if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Key: k, Body: []byte("alone")}}); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, &broker.Message{ID: broker.NewID(), Key: k, Body: []byte("batched")})
	}
	if err := s.Send(ctx, topic, batch); err != nil {
		t.Fatal(err)
	}
	// Right after the topic was created, a partition may not have its
	// leader yet (NotLeaderForPartition): such a message goes on through the
	// lone Writer, which retries, and lands where the balancer says all the
	// same.
	if produced := s.produced.Load(); produced == 0 {
		t.Fatalf("produceOne wrote none of the %d lone messages", len(keys))
	}
	got := map[string]map[string]int{} // key -> body -> partition
	for p := range 3 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		end, err := r.ReadLag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range end {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got[string(m.Key)] == nil {
				got[string(m.Key)] = map[string]int{}
			}
			got[string(m.Key)][string(m.Value)] = m.Partition
		}
		_ = r.Close()
	}
	spread := map[int]bool{}
	for _, k := range keys {
		want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(k)}, 0, 1, 2)
		alone, ok1 := got[k]["alone"]
		batched, ok2 := got[k]["batched"]
		if !ok1 || !ok2 || alone != want || batched != want {
			t.Errorf("key %q: alone on partition %d (found %v), batched on %d (found %v); want both on %d", k, alone, ok1, batched, ok2, want)
		}
		spread[want] = true
	}
	if len(spread) < 2 {
		t.Fatalf("the keys all hash to one partition (%v): the test shows nothing", spread)
	}
}

// produceOne sends with the publisher's acks and compression, and the record
// it writes is the one a Writer would: key, value, the ID header and the
// message's headers.
func TestProduceOneSettings(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	for _, tc := range []struct {
		acks        Acks
		compression kafka.Compression
	}{{AcksNone, 0}, {AcksLeader, kafka.Zstd}, {AcksAll, kafka.Snappy}} {
		t.Run(fmt.Sprintf("%v-%v", tc.acks, tc.compression), func(t *testing.T) {
			b, err := New(brokers, &Options{CreateTopics: true, Partitions: 1, ReplicationFactor: 1, Acks: tc.acks, Compression: tc.compression})
			if err != nil {
				t.Fatal(err)
			}
			s := newSender(b.a)
			defer s.Close()
			topic := conformance.RandomName("produce-one")
			t.Cleanup(func() {
				c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
				_, _ = c.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// (See TestSenderLoneAndBatching.)
			if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("warm-up")}}); err != nil {
				t.Fatal(err)
			}
			s.produced.Store(0)
			m := &broker.Message{ID: broker.NewID(), Key: "k", Body: []byte("body"), Headers: map[string]string{"h": "v"}}
			if err := s.Send(ctx, topic, []*broker.Message{m}); err != nil {
				t.Fatal(err)
			}
			if n := s.produced.Load(); n != 1 {
				t.Fatalf("produceOne wrote %d messages, want 1", n)
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
			defer r.Close()
			for {
				km, err := r.ReadMessage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if string(km.Value) == "warm-up" {
					continue
				}
				h := map[string]string{}
				for _, x := range km.Headers {
					h[x.Key] = string(x.Value)
				}
				if string(km.Key) != "k" || string(km.Value) != "body" || len(h) != 2 || h[HeaderID] != m.ID || h["h"] != "v" {
					t.Fatalf("record: key %q, value %q, headers %v; want k, body, %s=%s and h=v", km.Key, km.Value, h, HeaderID, m.ID)
				}
				return
			}
		})
	}
}
