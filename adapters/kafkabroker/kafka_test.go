package kafkabroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// client is a kafka-go client for the test cluster, for checks the adapter
// does not offer.
func client(t testing.TB) *kafka.Client {
	t.Helper()
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(testenv.KafkaBrokers(t)...), Transport: tr, Timeout: 30 * time.Second}
}

// partitionCount asks the cluster, through a fresh transport, how many
// partitions topic has (0: it does not exist).
func partitionCount(t testing.TB, topic string) int {
	t.Helper()
	res, err := client(t).Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Topics) != 1 || res.Topics[0].Error != nil {
		return 0
	}
	// A partition counts once it has a leader: until then a producer's
	// metadata leaves it out, and writes go to the others.
	n := 0
	for _, p := range res.Topics[0].Partitions {
		if p.Error == nil && p.Leader.ID >= 0 && p.Leader.Host != "" {
			n++
		}
	}
	return n
}

// run starts c.Consume in a goroutine and stops it when the test ends.
func run(t testing.TB, c broker.Consumer, topic string, h broker.Handler) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Consume(ctx, topic, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
			_ = c.Close()
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMissingTopicIsNotFound(t *testing.T) {
	b := newBroker(t, nil)
	topic := conformance.RandomName("missing")
	p := b.NewPublisher()
	defer p.Close()
	start := time.Now()
	err := p.Publish(context.Background(), topic, &broker.Message{Body: []byte("x")})
	if !errors.Is(err, broker.ErrNotFound) || broker.IsRetryable(err) {
		t.Fatalf("Publish to a missing topic = %v, want ErrNotFound", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to report a missing topic", d)
	}
	c, err := b.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Consume(context.Background(), topic, func(context.Context, *broker.Message) error { return nil })
	if !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("Consume of a missing topic = %v, want ErrNotFound", err)
	}
	if n := partitionCount(t, topic); n != 0 {
		t.Fatalf("the missing topic was created with %d partitions", n)
	}
}

func TestCreateTopicsOption(t *testing.T) {
	b := newBroker(t, &kafkabroker.Options{CreateTopics: true, Partitions: 2, ReplicationFactor: 1})
	pubTopic, conTopic := conformance.RandomName("created"), conformance.RandomName("created")
	brokers := testenv.KafkaBrokers(t)
	t.Cleanup(func() { deleteTopics(brokers, pubTopic, conTopic, conTopic+".dlq") })

	p := b.NewPublisher()
	defer p.Close()
	if err := p.Publish(context.Background(), pubTopic, &broker.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if n := partitionCount(t, pubTopic); n != 2 {
		t.Fatalf("published-to topic has %d partitions, want 2", n)
	}
	c, err := b.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	run(t, c, conTopic, func(context.Context, *broker.Message) error { got.Add(1); return nil })
	waitFor(t, "the consumed topic and its dead-letter topic", func() bool {
		return partitionCount(t, conTopic) == 2 && partitionCount(t, conTopic+".dlq") == 2
	})
	if err := p.Publish(context.Background(), conTopic, &broker.Message{Body: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message", func() bool { return got.Load() == 1 })
}

// A topic created by someone else after the publisher cached the cluster's
// metadata is usable at once, not only after the cache expires.
func TestTopicCreatedElsewhereIsUsableAtOnce(t *testing.T) {
	b := newBroker(t, nil)
	first := newTopic(t, b, 1)
	p := b.NewPublisher()
	defer p.Close()
	if err := p.Publish(context.Background(), first, &broker.Message{Body: []byte("warm the cache")}); err != nil {
		t.Fatal(err)
	}
	later := newTopic(t, newBroker(t, nil), 1)
	if err := p.Publish(context.Background(), later, &broker.Message{Body: []byte("x")}); err != nil {
		t.Fatalf("Publish to a topic created after the cache was filled: %v", err)
	}
}

func TestGroupIDs(t *testing.T) {
	for _, verbatim := range []bool{false, true} {
		t.Run(fmt.Sprintf("verbatim=%v", verbatim), func(t *testing.T) {
			b := newBroker(t, &kafkabroker.Options{GroupIDVerbatim: verbatim})
			topic := newTopic(t, b, 1)
			group := conformance.RandomName("g")
			want := group + "/" + topic
			if verbatim {
				want = group
			}
			p := b.NewPublisher()
			defer p.Close()
			if err := p.Publish(context.Background(), topic, &broker.Message{Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			c, err := b.NewConsumer(&broker.ConsumerOptions{Group: group})
			if err != nil {
				t.Fatal(err)
			}
			var got atomic.Int64
			stop := run(t, c, topic, func(context.Context, *broker.Message) error { got.Add(1); return nil })
			waitFor(t, "the message", func() bool { return got.Load() == 1 })
			_ = stop()
			res, err := client(t).OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: want, Topics: map[string][]int{topic: {0}}})
			if err != nil {
				t.Fatal(err)
			}
			if ps := res.Topics[topic]; len(ps) != 1 || ps[0].CommittedOffset != 1 {
				t.Fatalf("Kafka group %q committed %+v, want offset 1", want, ps)
			}
		})
	}
}

// A message of exactly MaxMessageSize passes the broker's default
// message.max.bytes; many headers are counted before sending.
func TestMessageSizeLimitOnTheBroker(t *testing.T) {
	b := newBroker(t, nil)
	topic := newTopic(t, b, 1)
	p := b.NewPublisher()
	defer p.Close()
	m := &broker.Message{ID: "edge", Key: "k", Headers: map[string]string{"h": "v"}}
	m.Body = bytes.Repeat([]byte("x"), b.MaxMessageSize()-(&broker.Message{ID: m.ID, Key: m.Key, Headers: m.Headers}).Size())
	if m.Size() != b.MaxMessageSize() {
		t.Fatalf("size %d, want %d", m.Size(), b.MaxMessageSize())
	}
	if err := p.Publish(context.Background(), topic, m); err != nil {
		t.Fatalf("Publish of a message at the limit: %v", err)
	}
	many := &broker.Message{Headers: map[string]string{}}
	for i := range 2000 {
		many.Headers[fmt.Sprintf("h%d", i)] = ""
	}
	many.Body = bytes.Repeat([]byte("x"), b.MaxMessageSize()-many.Size()-100)
	err := p.Publish(context.Background(), topic, many)
	if !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Fatalf("Publish of a message whose 2000 headers push it over = %v, want ErrMessageTooLarge", err)
	}
	c, err := b.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Pointer[broker.Message]
	run(t, c, topic, func(_ context.Context, r *broker.Message) error { got.Store(r); return nil })
	waitFor(t, "the large message", func() bool { return got.Load() != nil })
	if r := got.Load(); r.ID != "edge" || len(r.Body) != len(m.Body) {
		t.Fatalf("received id %q with %d bytes", r.ID, len(r.Body))
	}
}

// The broker refuses one partition's batch (a topic limit below the
// adapter's): the error names that message, and the other one is stored.
func TestPartialFailureNamesTheMessages(t *testing.T) {
	b := newBroker(t, nil)
	topic := conformance.RandomName("partial")
	res, err := client(t).CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: 2, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "4096"}},
	}}})
	if err != nil || res.Errors[topic] != nil {
		t.Fatalf("CreateTopics: %v %v", err, res)
	}
	brokers := testenv.KafkaBrokers(t)
	t.Cleanup(func() { deleteTopics(brokers, topic) })
	waitFor(t, "the topic", func() bool { return partitionCount(t, topic) == 2 })
	// Two keys that the murmur2 balancer puts on different partitions.
	var keys [2]string
	for i := 0; keys[0] == "" || keys[1] == ""; i++ {
		k := fmt.Sprintf("key-%d", i)
		part := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(k)}, 0, 1)
		if keys[part] == "" {
			keys[part] = k
		}
	}
	small := &broker.Message{Key: keys[0], Body: []byte("fits")}
	big := &broker.Message{Key: keys[1], Body: bytes.Repeat([]byte("x"), 8192)}
	p := b.NewPublisher()
	defer p.Close()
	err = p.Publish(context.Background(), topic, small, big)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Failed[0].Index != 1 || pe.Failed[0].ID != big.ID {
		t.Fatalf("Publish = %v, want a PublishError naming message #1 only", err)
	}
	if !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Errorf("the failure is %v, want ErrMessageTooLarge", pe.Failed[0].Err)
	}
	var ke kafka.Error
	if !errors.As(pe.Failed[0].Err, &ke) {
		t.Errorf("the kafka-go error is not reachable from %v", pe.Failed[0].Err)
	}
}

func TestStatsLagAndDeadLetters(t *testing.T) {
	b := newBroker(t, nil)
	topic := newTopic(t, b, 3)
	p := b.NewPublisher()
	defer p.Close()
	var msgs []*broker.Message
	for i := range 10 {
		msgs = append(msgs, &broker.Message{Body: fmt.Appendf(nil, "%d", i)})
	}
	if err := p.Publish(context.Background(), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	sr := any(p).(broker.StatsReader)
	st, err := sr.Stats(context.Background(), topic, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth != 10 || st.Lag != 10 || st.InFlight != -1 || st.Consumers != 0 || st.DeadLetters != 0 {
		t.Fatalf("before consuming: %+v", st)
	}
	checkPartitions(t, st, 3)
	c, err := b.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	run(t, c, topic, func(_ context.Context, m *broker.Message) error {
		handled.Add(1)
		if string(m.Body) == "3" || string(m.Body) == "7" {
			return broker.Permanent(errors.New("bad"))
		}
		return nil
	})
	waitFor(t, "lag 0 and 2 dead letters", func() bool {
		st, err = c.Stats(context.Background(), topic, "")
		return err == nil && st.Lag == 0 && st.Depth == 0 && st.DeadLetters == 2
	})
	if st.InFlight != 0 || st.Consumers != 1 {
		t.Errorf("while consuming: %+v, want InFlight 0 and 1 consumer", st)
	}
	checkPartitions(t, st, 3)
	var ends int64
	for _, p := range st.Partitions {
		ends += p.End
	}
	if ends != 10 {
		t.Errorf("partition ends sum to %d, want the 10 messages published: %+v", ends, st.Partitions)
	}
	if _, err := c.Stats(context.Background(), conformance.RandomName("missing"), ""); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Stats of a missing topic = %v, want ErrNotFound", err)
	}
}

// checkPartitions checks that st has one PartitionLag per partition of the
// topic, in order, each End minus Committed, summing to st.Lag.
func checkPartitions(t *testing.T, st broker.Stats, partitions int) {
	t.Helper()
	if len(st.Partitions) != partitions {
		t.Fatalf("Stats.Partitions = %+v, want %d partitions", st.Partitions, partitions)
	}
	var sum int64
	for i, p := range st.Partitions {
		if p.Partition != i || p.Lag != p.End-p.Committed || p.Lag < 0 {
			t.Errorf("partition %d of Stats.Partitions = %+v", i, p)
		}
		sum += p.Lag
	}
	if sum != st.Lag {
		t.Errorf("partition lags sum to %d, Lag is %d: %+v", sum, st.Lag, st.Partitions)
	}
}

func TestNativeMessage(t *testing.T) {
	b := newBroker(t, nil)
	topic := newTopic(t, b, 1)
	p := b.NewPublisher()
	defer p.Close()
	sent := &broker.Message{Key: "k", Body: []byte("x"), Headers: map[string]string{"h": "v"}}
	if err := p.Publish(context.Background(), topic, sent); err != nil {
		t.Fatal(err)
	}
	c, err := b.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		km, again kafka.Message
		id        string
	}
	got := make(chan seen, 1)
	run(t, c, topic, func(_ context.Context, m *broker.Message) error {
		var km kafka.Message
		var ptr *kafka.Message
		if !m.As(&km) || !m.As(&ptr) {
			t.Error("As(*kafka.Message) or As(**kafka.Message) = false")
		}
		var wrong string
		if m.As(&wrong) {
			t.Error("As(*string) = true")
		}
		// As hands out copies: writing to one changes neither the message
		// nor what the next call returns.
		for _, h := range km.Headers {
			clear(h.Value)
		}
		km.Key[0] = 'X'
		select {
		case got <- seen{km: *ptr, again: func() kafka.Message { var k kafka.Message; m.As(&k); return k }(), id: m.ID}:
		default:
		}
		return nil
	})
	select {
	case s := <-got:
		km := s.km
		if km.Topic != topic || km.Partition != 0 || km.Offset != 0 || string(km.Key) != "k" || string(km.Value) != "x" ||
			km.HighWaterMark < 1 || km.Time.IsZero() {
			t.Errorf("native message = %+v", km)
		}
		if len(km.Headers) != 2 || km.Headers[0].Key != kafkabroker.HeaderID || string(km.Headers[0].Value) != sent.ID ||
			km.Headers[1].Key != "h" || string(km.Headers[1].Value) != "v" {
			t.Errorf("native headers = %v, want the ID %q then h=v", km.Headers, sent.ID)
		}
		if s.id != sent.ID || string(s.again.Key) != "k" || string(s.again.Headers[0].Value) != sent.ID {
			t.Errorf("after writing to a copy: ID %q, key %q, header %q; want them unchanged", s.id, s.again.Key, s.again.Headers[0].Value)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no message")
	}
}

// A lone synchronous Publish is sent at once, without waiting for kafka-go's
// default batch timeout of one second.
func TestSinglePublishIsQuick(t *testing.T) {
	b := newBroker(t, nil)
	topic := newTopic(t, b, 1)
	p := b.NewPublisher()
	defer p.Close()
	var durations []time.Duration
	for range 10 {
		start := time.Now()
		if err := p.Publish(context.Background(), topic, &broker.Message{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	fast := 0
	for _, d := range durations[1:] { // the first one also fetches metadata
		if d < 250*time.Millisecond {
			fast++
		}
	}
	if fast < 7 {
		t.Errorf("single publishes took %v; want them well under kafka-go's 1 s default", durations)
	}
}

// Members joining and leaving while messages are in flight lose nothing.
func TestRebalanceLosesNothing(t *testing.T) {
	b := newBroker(t, nil)
	topic := newTopic(t, b, 4)
	const n = 3000
	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	handler := func(_ context.Context, m *broker.Message) error {
		time.Sleep(time.Millisecond)
		mu.Lock()
		handled[m.ID]++
		mu.Unlock()
		return nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(handled) }
	p := b.NewPublisher()
	defer p.Close()
	var ids []string
	for i := 0; i < n; i += 100 {
		batch := make([]*broker.Message, 100)
		for j := range batch {
			batch[j] = &broker.Message{Key: fmt.Sprintf("k%d", (i+j)%20), Body: []byte("x")}
		}
		if err := p.Publish(context.Background(), topic, batch...); err != nil {
			t.Fatal(err)
		}
		for _, m := range batch {
			ids = append(ids, m.ID)
		}
	}
	o := &broker.ConsumerOptions{Group: "rebalance", Concurrency: 4, OrderByKey: true}
	newConsumer := func() broker.Consumer {
		c, err := newBroker(t, nil).NewConsumer(o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	stopA := run(t, newConsumer(), topic, handler)
	waitFor(t, "a quarter handled by A", func() bool { return count() >= n/4 })
	run(t, newConsumer(), topic, handler) // B joins
	waitFor(t, "half handled", func() bool { return count() >= n/2 })
	if err := stopA(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	run(t, newConsumer(), topic, handler) // C joins as A left
	waitFor(t, "every message", func() bool { return count() >= n })
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, id := range ids {
		if handled[id] == 0 {
			t.Errorf("message %s lost", id)
		}
		dups += handled[id] - 1
	}
	t.Logf("%d messages through 3 rebalances: %d duplicate deliveries", n, dups)
}
