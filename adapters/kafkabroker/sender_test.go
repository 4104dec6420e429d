package kafkabroker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// A Send with few others in flight is produced directly; when many small
// Sends are in flight, some go through the batching Writer and share its
// batches.
func TestSenderLoneAndBatching(t *testing.T) {
	s, topic, ctx := warmSender(t, Options{}, 1)
	for range 3 {
		if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	if produced, unbatched, batching := s.produced.Load(), s.unbatched.Stats().Messages, s.batching.Stats().Messages; produced != 3 || unbatched != 0 || batching != 0 {
		t.Fatalf("three Sends of one message one after another: produce wrote %d, unbatched %d, batching %d; want 3, 0, 0", produced, unbatched, batching)
	}
	if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("x")}, {ID: broker.NewID(), Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if produced, unbatched, batching := s.produced.Load(), s.unbatched.Stats().Messages, s.batching.Stats().Messages; produced != 5 || unbatched != 0 || batching != 0 {
		t.Fatalf("then a Send of two messages: produce wrote %d, unbatched %d, batching %d; want 5, 0, 0", produced, unbatched, batching)
	}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 5 {
				if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Body: []byte("y")}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	produced, unbatched, batching := s.produced.Load()-5, s.unbatched.Stats().Messages, s.batching.Stats().Messages
	if produced+unbatched+batching != 320 || batching == 0 {
		t.Fatalf("64 concurrent senders of 5: produce wrote %d, unbatched %d, batching %d; want 320 in all, some of them batched (Stats resets at each call)", produced, unbatched, batching)
	}
}

// A key lands on the same partition whether its message was produced alone,
// produced in a Send with other keys, or written by a Writer: the partition
// the murmur2 balancer picks, as the Java client's default partitioner would.
// The unkeyed messages of one Send share one partition.
func TestProduceKeepsKeyPartition(t *testing.T) {
	s, topic, ctx := warmSender(t, Options{}, 3)
	keys := []string{"k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}
	var together, written, unkeyed []*broker.Message
	for _, k := range keys {
		if err := s.Send(ctx, topic, []*broker.Message{{ID: broker.NewID(), Key: k, Body: []byte("alone")}}); err != nil {
			t.Fatal(err)
		}
		together = append(together, &broker.Message{ID: broker.NewID(), Key: k, Body: []byte("together")})
		written = append(written, &broker.Message{ID: broker.NewID(), Key: k, Body: []byte("writer")})
		unkeyed = append(unkeyed, &broker.Message{ID: broker.NewID(), Body: []byte("unkeyed")})
	}
	if err := s.Send(ctx, topic, together); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, topic, unkeyed); err != nil {
		t.Fatal(err)
	}
	if err := s.write(ctx, s.batching, topic, new(records).fill(topic, written, time.Now())); err != nil {
		t.Fatal(err)
	}
	// Right after the topic was created, a partition may not have its
	// leader yet (NotLeaderForPartition): such a message goes on through the
	// unbatched Writer, which retries, and lands where the balancer says all the
	// same.
	if produced := s.produced.Load(); produced == 0 {
		t.Fatalf("produce wrote none of the %d messages sent", 3*len(keys))
	}
	got := map[string]map[string]int{} // key -> body -> partition
	unkeyedOn := map[int]int{}
	for _, m := range readTopic(t, ctx, topic, 3) {
		if len(m.Key) == 0 {
			unkeyedOn[m.Partition]++
			continue
		}
		if got[string(m.Key)] == nil {
			got[string(m.Key)] = map[string]int{}
		}
		got[string(m.Key)][string(m.Value)] = m.Partition
	}
	spread := map[int]bool{}
	for _, k := range keys {
		want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(k)}, 0, 1, 2)
		for _, how := range []string{"alone", "together", "writer"} {
			if p, ok := got[k][how]; !ok || p != want {
				t.Errorf("key %q %s: on partition %d (found: %v), want %d", k, how, p, ok, want)
			}
		}
		spread[want] = true
	}
	if len(spread) < 2 {
		t.Fatalf("the keys all hash to one partition (%v): the test shows nothing", spread)
	}
	if len(unkeyedOn) != 1 && s.produced.Load() == int64(4*len(keys)) {
		t.Errorf("the unkeyed messages of one Send, all produced directly, landed on partitions %v, want one", unkeyedOn)
	}
}

// produce sends with the publisher's acks and compression, and the record
// it writes is the one a Writer would: key, value, the ID header and the
// message's headers.
func TestProduceSettings(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	for _, tc := range []struct {
		acks        Acks
		compression kafka.Compression
	}{{AcksNone, 0}, {AcksLeader, kafka.Zstd}, {AcksAll, kafka.Snappy}} {
		t.Run(fmt.Sprintf("%v-%v", tc.acks, tc.compression), func(t *testing.T) {
			s, topic, ctx := warmSender(t, Options{Acks: tc.acks, Compression: tc.compression}, 1)
			m := &broker.Message{ID: broker.NewID(), Key: "k", Body: []byte("body"), Headers: map[string]string{"h": "v"}}
			if err := s.Send(ctx, topic, []*broker.Message{m}); err != nil {
				t.Fatal(err)
			}
			if n := s.produced.Load(); n != 1 {
				t.Fatalf("produce wrote %d messages, want 1", n)
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

// A Send larger than one request may carry goes in several requests per
// partition, each within Options.MaxMessageSize and Options.BatchSize, in
// order: every message arrives, a key's messages in the order sent.
func TestProduceSplitsLargeSends(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     Options
		bodySize int
		requests func(perPartition []*broker.Message) int // the fewest requests for one partition's messages
	}{
		{"bytes", Options{MaxMessageSize: 16 << 10}, 1 << 10, func(ms []*broker.Message) int {
			size := 0
			for _, m := range ms {
				size += recordSize(m)
			}
			return (size + (16<<10 - batchOverhead) - 1) / (16<<10 - batchOverhead)
		}},
		{"count", Options{BatchSize: 7}, 10, func(ms []*broker.Message) int { return (len(ms) + 6) / 7 }},
	} {
		// Two keys on different partitions of 2.
		part := func(k string) int { return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(k)}, 0, 1) }
		keys := []string{"a"}
		for c := 'b'; len(keys) < 2; c++ {
			if part(string(c)) != part("a") {
				keys = append(keys, string(c))
			}
		}
		t.Run(tc.name, func(t *testing.T) {
			s, topic, ctx := warmSender(t, tc.opts, 2)
			const n = 100
			msgs := make([]*broker.Message, n)
			for i := range msgs {
				body := bytes.Repeat([]byte{'x'}, tc.bodySize)
				copy(body, fmt.Sprintf("%03d", i))
				msgs[i] = &broker.Message{ID: broker.NewID(), Key: keys[i%2], Body: body}
			}
			if err := s.Send(ctx, topic, msgs); err != nil {
				t.Fatal(err)
			}
			if got := s.produced.Load(); got != n {
				t.Fatalf("produce wrote %d of %d messages", got, n)
			}
			// One broker leads both partitions: each request carries the next
			// batch of each, so there are as many as the longer one needs.
			var even, odd []*broker.Message
			for i, m := range msgs {
				if i%2 == 0 {
					even = append(even, m)
				} else {
					odd = append(odd, m)
				}
			}
			want := max(tc.requests(even), tc.requests(odd))
			if got := int(s.requests.Load()); got < want || (tc.name == "count" && got != want) {
				t.Fatalf("produce made %d requests, want %d: one per batch of the partition that needs the most", got, want)
			}
			seen := map[string][]string{}
			total := 0
			for _, m := range readTopic(t, ctx, topic, 2) {
				seen[string(m.Key)] = append(seen[string(m.Key)], string(m.Value[:3]))
				total++
			}
			if total != n || len(seen[keys[0]]) != n/2 {
				t.Fatalf("read %d messages, %d of key %s, want %d and %d", total, len(seen[keys[0]]), keys[0], n, n/2)
			}
			for k, order := range seen {
				if !slices.IsSorted(order) {
					t.Errorf("key %q arrived out of order: %v", k, order)
				}
			}
		})
	}
}

// A Send of more unkeyed messages than a batch holds is spread over the
// partitions a batch at a time, so that a large Send still reaches every
// member of a group.
func TestProduceSpreadsLargeUnkeyedSends(t *testing.T) {
	s, topic, ctx := warmSender(t, Options{BatchSize: 5}, 3)
	var msgs []*broker.Message
	for range 30 {
		msgs = append(msgs, &broker.Message{ID: broker.NewID(), Body: []byte("unkeyed")})
	}
	if err := s.Send(ctx, topic, msgs); err != nil {
		t.Fatal(err)
	}
	if n := s.produced.Load(); n != 30 {
		t.Fatalf("produce wrote %d of 30 messages", n)
	}
	on := map[int]int{}
	for _, m := range readTopic(t, ctx, topic, 3) {
		on[m.Partition]++
	}
	if on[0] != 10 || on[1] != 10 || on[2] != 10 {
		t.Fatalf("30 unkeyed messages in batches of 5 landed %v, want 10 on each of 3 partitions", on)
	}
}

// warmSender returns a sender of a broker with opts, which creates topics of
// `partitions` partitions, a new topic, and a context for the test. It has
// sent every partition of the topic a "warm-up" message (keyed to land
// there), and then zeroed its counts: the first Sends to a new topic may find
// it missing from the transport's metadata cache, or a partition without its
// leader yet, and go on through the unbatched Writer, which refreshes the
// cache and retries until the partition takes the message.
func warmSender(t *testing.T, opts Options, partitions int) (*sender, string, context.Context) {
	t.Helper()
	brokers := testenv.KafkaBrokers(t)
	opts.CreateTopics, opts.Partitions, opts.ReplicationFactor = true, partitions, 1
	b, err := New(brokers, &opts)
	if err != nil {
		t.Fatal(err)
	}
	s := newSender(b.a)
	t.Cleanup(func() { _ = s.Close() })
	topic := conformance.RandomName("sender")
	t.Cleanup(func() {
		c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
		_, _ = c.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	var warm []*broker.Message
	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	for p := range partitions {
		for k := 0; ; k++ { // a key murmur2 puts on p
			key := fmt.Sprint("warm-up-", k)
			if (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(key)}, ids...) == p {
				warm = append(warm, &broker.Message{ID: broker.NewID(), Key: key, Body: []byte("warm-up")})
				break
			}
		}
	}
	if err := s.Send(ctx, topic, warm); err != nil {
		t.Fatal(err)
	}
	s.produced.Store(0)
	s.requests.Store(0)
	_, _ = s.unbatched.Stats(), s.batching.Stats() // Stats resets the counts
	return s, topic, ctx
}

// readTopic returns what the partitions of topic hold, the warm-up messages
// of warmSender left out.
func readTopic(t *testing.T, ctx context.Context, topic string, partitions int) []kafka.Message {
	t.Helper()
	var ms []kafka.Message
	for p := range partitions {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: testenv.KafkaBrokers(t), Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		lag, err := r.ReadLag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range lag {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Value) != "warm-up" {
				ms = append(ms, m)
			}
		}
		_ = r.Close()
	}
	return ms
}
