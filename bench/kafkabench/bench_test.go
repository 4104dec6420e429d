package kafkabench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/sidebyside"
	"github.com/brokerkit/broker/internal/testenv"
)

// The settings both sides share; the kafka-go values are the adapter's
// defaults (kafkabroker.Default* and its fetch settings).
const (
	bodySize   = 256
	partitions = 3
	batch      = 100 // messages per Publish / WriteMessages call
	publishers = 8   // goroutines publishing at once
	// consumeConcurrency is the library's handler concurrency in the second
	// consume variant; the raw Reader loop handles one message at a time.
	consumeConcurrency = 8
	// messages is the work of one round of one case; rounds is how many
	// rounds every case runs, interleaved (package sidebyside).
	messages = 200_000
	rounds   = 7
)

var body = make([]byte, bodySize)

func TestMain(m *testing.M) { testenv.Main(m) }

type env struct {
	brokers []string
	kb      *kafkabroker.Broker
}

func setup(b *testing.B) *env {
	brokers := testenv.KafkaBrokers(b)
	kb, err := kafkabroker.New(brokers, nil)
	if err != nil {
		b.Fatal(err)
	}
	return &env{brokers: brokers, kb: kb}
}

// topic creates a fresh topic (and its dead-letter topic) and deletes them
// after the benchmark.
func (e *env) topic(b *testing.B) string {
	topic := conformance.RandomName("bench")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.kb.CreateTopic(ctx, topic, partitions); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		c := &kafka.Client{Addr: kafka.TCP(e.brokers...), Transport: tr}
		_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic, topic + ".dlq"}})
	})
	return topic
}

// rawWriter is a kafka-go Writer configured as the adapter configures its own.
func (e *env) rawWriter() *kafka.Writer {
	return &kafka.Writer{
		Addr:            kafka.TCP(e.brokers...),
		Balancer:        &kafka.Murmur2Balancer{},
		MaxAttempts:     kafkabroker.DefaultPublishAttempts,
		WriteBackoffMin: 100 * time.Millisecond,
		WriteBackoffMax: time.Second,
		BatchSize:       kafkabroker.DefaultBatchSize,
		BatchBytes:      kafkabroker.DefaultMaxMessageSize - 61,
		BatchTimeout:    kafkabroker.DefaultBatchTimeout,
		ReadTimeout:     kafkabroker.DefaultWriteTimeout,
		WriteTimeout:    kafkabroker.DefaultWriteTimeout,
		RequiredAcks:    kafka.RequireAll,
		Transport:       &kafka.Transport{ClientID: kafkabroker.DefaultClientID, DialTimeout: kafkabroker.DefaultDialTimeout},
	}
}

// rawReader is a kafka-go consumer-group Reader with the adapter's consumer
// settings (1 MiB fetches of at least 1 byte, the max wait, heartbeat,
// session and rebalance timeouts, read-committed, the range then round-robin
// balancers, a 5 s partition watch, a 256-message read-ahead like the
// adapter's runs); kafka-go commits on its own 200 ms interval where the
// adapter commits its finished prefix on the same interval.
func (e *env) rawReader(topic, group string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:                e.brokers,
		GroupID:                kafkabroker.GroupID(group, topic),
		Topic:                  topic,
		Dialer:                 &kafka.Dialer{ClientID: kafkabroker.DefaultClientID, Timeout: kafkabroker.DefaultDialTimeout, DualStack: true},
		QueueCapacity:          256,
		MinBytes:               1,
		MaxBytes:               1 << 20,
		MaxWait:                kafkabroker.DefaultMaxWait,
		ReadBatchTimeout:       10 * time.Second,
		ReadLagInterval:        -1,
		GroupBalancers:         []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}},
		HeartbeatInterval:      kafkabroker.DefaultHeartbeatInterval,
		CommitInterval:         kafkabroker.DefaultCommitInterval,
		PartitionWatchInterval: 5 * time.Second,
		WatchPartitionChanges:  true,
		SessionTimeout:         kafkabroker.DefaultSessionTimeout,
		RebalanceTimeout:       kafkabroker.DefaultRebalanceTimeout,
		JoinGroupBackoff:       time.Second,
		StartOffset:            kafka.FirstOffset,
		ReadBackoffMin:         100 * time.Millisecond,
		ReadBackoffMax:         time.Second,
		IsolationLevel:         kafka.ReadCommitted,
		MaxAttempts:            3,
	})
}

// publishN publishes n messages with `publishers` goroutines, each sending
// batches of `batch`, through send.
func publishN(b *testing.B, n int, send func(ctx context.Context, k int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				start := int(next.Add(batch)) - batch
				if start >= n {
					return
				}
				if err := send(context.Background(), min(batch, n-start)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func libraryBatch(k int) []*broker.Message {
	ms := make([]*broker.Message, k)
	for i := range ms {
		ms[i] = &broker.Message{Body: body}
	}
	return ms
}

func rawBatch(topic string, k int) []kafka.Message {
	ms := make([]kafka.Message, k)
	for i := range ms {
		ms[i] = kafka.Message{Topic: topic, Value: body}
	}
	return ms
}

// rawBatchWithID is rawBatch with the records the library writes: a message
// id in a header (and the record timestamp set by the client).
func rawBatchWithID(topic string, k int) []kafka.Message {
	ms := make([]kafka.Message, k)
	now := time.Now()
	for i := range ms {
		ms[i] = kafka.Message{Topic: topic, Value: body, Time: now,
			Headers: []kafka.Header{{Key: kafkabroker.HeaderID, Value: []byte(broker.NewID())}}}
	}
	return ms
}

// BenchmarkPublish: 8 goroutines publishing 100-message batches, acks=all,
// `messages` a round, each round on a new topic, unkeyed. "raw" writes bare
// 256-byte records through a Writer with the adapter's settings; "raw-id"
// the records the library writes (the same body plus a 26-byte message id in
// a header); "raw-id-sticky" the same through a Writer whose balancer keeps
// unkeyed records on one partition for 500 records at a time (the Java
// client's sticky partitioning; the library keeps a call's unkeyed messages
// on one partition), to tell how much of the library's lead is that.
// Reported: medians of the per-round ratios to raw (run with -benchtime 1x).
func BenchmarkPublish(b *testing.B) {
	benchmarkPublish(b, func(k int) string { return "" })
}

// BenchmarkPublishKeyed: BenchmarkPublish with every message keyed, 100
// keys spread over the 3 partitions, so that each call touches every
// partition: the library then makes one request per partition, and no
// balancer can keep a call on one.
func BenchmarkPublishKeyed(b *testing.B) {
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	benchmarkPublish(b, func(k int) string { return keys[k%len(keys)] })
}

func benchmarkPublish(b *testing.B, key func(int) string) {
	e := setup(b)
	// timed publishes a round to a new topic, with a publisher made for it
	// (a raw Writer's transport would not know the topic yet).
	timed := func(b *testing.B, open func() (send func(ctx context.Context, topic string, k int) error, close func() error)) float64 {
		topic := e.topic(b)
		send, closer := open()
		defer closer()
		start := time.Now()
		publishN(b, messages, func(ctx context.Context, k int) error { return send(ctx, topic, k) })
		return messages / time.Since(start).Seconds()
	}
	keyed := func(ms []kafka.Message) []kafka.Message {
		for i := range ms {
			if k := key(i); k != "" {
				ms[i].Key = []byte(k)
			}
		}
		return ms
	}
	raw := func(records func(topic string, k int) []kafka.Message, balancer kafka.Balancer) func(b *testing.B) float64 {
		return func(b *testing.B) float64 {
			return timed(b, func() (func(context.Context, string, int) error, func() error) {
				w := e.rawWriter()
				if balancer != nil {
					w.Balancer = balancer
				}
				return func(ctx context.Context, topic string, k int) error {
					return w.WriteMessages(ctx, keyed(records(topic, k))...)
				}, w.Close
			})
		}
	}
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "raw", Run: raw(rawBatch, nil)},
		sidebyside.Case{Name: "library", Run: func(b *testing.B) float64 {
			return timed(b, func() (func(context.Context, string, int) error, func() error) {
				p := e.kb.NewPublisher()
				return func(ctx context.Context, topic string, k int) error {
					ms := libraryBatch(k)
					for i, m := range ms {
						m.Key = key(i)
					}
					return p.Publish(ctx, topic, ms...)
				}, p.Close
			})
		}},
		sidebyside.Case{Name: "raw-id", Run: raw(rawBatchWithID, nil)},
		sidebyside.Case{Name: "raw-id-sticky", Run: raw(rawBatchWithID, &stickyBalancer{run: kafkabroker.DefaultBatchSize})},
	)
}

// stickyBalancer sends keyed records where kafka.Murmur2Balancer does, and
// unkeyed ones to one partition, picked at random, for `run` records at a
// time.
type stickyBalancer struct {
	run     int
	mu      sync.Mutex
	n, part int
}

func (s *stickyBalancer) Balance(m kafka.Message, partitions ...int) int {
	if len(m.Key) > 0 {
		return (&kafka.Murmur2Balancer{}).Balance(m, partitions...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n%s.run == 0 {
		s.part = partitions[rand.IntN(len(partitions))]
	}
	s.n++
	return s.part
}

// BenchmarkPublishOne: one message per synchronous call, one at a time: the
// latency of a lone Publish. "raw" is a Writer with the adapter's settings,
// which waits out its 200 µs batch timer (about a millisecond in an idle
// process); the adapter sends a Publish with no other in flight at once.
// raw-default is a kafka-go Writer with only Addr (and a transport) set: its
// 1 s BatchTimeout (and acks=none) is what the adapter's explicit
// configuration avoids.
func BenchmarkPublishOne(b *testing.B) {
	e := setup(b)
	b.Run("library", func(b *testing.B) {
		topic := e.topic(b)
		p := e.kb.NewPublisher()
		defer p.Close()
		b.ResetTimer()
		for b.Loop() {
			if err := p.Publish(context.Background(), topic, &broker.Message{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, raw := range []struct {
		name string
		w    func() *kafka.Writer
	}{
		{"raw", e.rawWriter},
		// Its own transport: kafka-go's shared DefaultTransport caches metadata
		// for 6 s, so it would not see this run's new topic (the adapter
		// refreshes its cache when a topic it does not know turns out to exist).
		{"raw-default", func() *kafka.Writer {
			return &kafka.Writer{Addr: kafka.TCP(e.brokers...), Transport: &kafka.Transport{}}
		}},
	} {
		b.Run(raw.name, func(b *testing.B) {
			topic := e.topic(b)
			w := raw.w()
			defer w.Close()
			b.ResetTimer()
			for b.Loop() {
				if err := w.WriteMessages(context.Background(), kafka.Message{Topic: topic, Value: body}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// counter counts handled messages and notes when the first and the n-th
// arrived.
type counter struct {
	n           int64
	seen        atomic.Int64
	first, last atomic.Int64 // UnixNano
	done        chan struct{}

	memory        bool // read the allocation counters at the first and the n-th
	before, after runtime.MemStats
}

func newCounter(n int) *counter { return &counter{n: int64(n), done: make(chan struct{})} }

func (c *counter) add() {
	k := c.seen.Add(1)
	if k == 1 {
		if c.memory {
			runtime.ReadMemStats(&c.before)
		}
		c.first.Store(time.Now().UnixNano())
	}
	if k == c.n {
		c.last.Store(time.Now().UnixNano())
		if c.memory {
			runtime.ReadMemStats(&c.after)
		}
		close(c.done)
	}
}

// perMessage is the bytes and the allocations of the whole process between
// the first and the n-th message, per message.
func (c *counter) perMessage() (bytes, allocs float64) {
	n := float64(c.n - 1)
	return float64(c.after.TotalAlloc-c.before.TotalAlloc) / n, float64(c.after.Mallocs-c.before.Mallocs) / n
}

// rate is messages per second between the first and the last message, so that
// joining the group does not count.
func (c *counter) rate() float64 {
	d := time.Duration(c.last.Load() - c.first.Load())
	if d <= 0 {
		return 0
	}
	return float64(c.n-1) / d.Seconds()
}

func (c *counter) wait(b *testing.B) {
	select {
	case <-c.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("consumed %d of %d", c.seen.Load(), c.n)
	}
}

// BenchmarkConsume: `messages` already in a new topic each round, consumed
// by one group member that commits as it goes: "library" with the default
// Concurrency 1, "library-c8" with 8 handlers, "raw" a
// FetchMessage/CommitMessages loop. A round's rate runs from the first message
// to the last, leaving out the group join. Reported: medians of the per-round
// ratios to raw (run with -benchtime 1x).
func BenchmarkConsume(b *testing.B) {
	e := setup(b)
	prefill := e.backlog(b)
	library := func(conc int) func(b *testing.B) float64 {
		return func(b *testing.B) float64 {
			cnt := newCounter(messages)
			consumeLibrary(b, e, prefill(b), conc, cnt)
			return cnt.rate()
		}
	}
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "raw", Run: func(b *testing.B) float64 {
			cnt := newCounter(messages)
			consumeRaw(b, e, prefill(b), cnt)
			return cnt.rate()
		}},
		sidebyside.Case{Name: "library", Run: library(1)},
		sidebyside.Case{Name: fmt.Sprintf("library-c%d", consumeConcurrency), Run: library(consumeConcurrency)},
	)
}

// BenchmarkConsumeMemory: what BenchmarkConsume measures, once for each
// side, reporting the bytes and the allocations of the whole process per
// message consumed (publishing is over before the first message arrives).
func BenchmarkConsumeMemory(b *testing.B) {
	e := setup(b)
	prefill := e.backlog(b)
	for _, side := range []string{"raw", "library"} {
		cnt := newCounter(messages)
		cnt.memory = true
		if side == "raw" {
			consumeRaw(b, e, prefill(b), cnt)
		} else {
			consumeLibrary(b, e, prefill(b), 1, cnt)
		}
		bytes, allocs := cnt.perMessage()
		b.ReportMetric(bytes, side+"-B/msg")
		b.ReportMetric(allocs, side+"-allocs/msg")
	}
}

// backlog returns a function that makes a new topic holding `messages`
// messages, published by the library before it returns.
func (e *env) backlog(b *testing.B) func(b *testing.B) string {
	p := e.kb.NewPublisher()
	b.Cleanup(func() { _ = p.Close() })
	return func(b *testing.B) string {
		topic := e.topic(b)
		publishN(b, messages, func(ctx context.Context, k int) error { return p.Publish(ctx, topic, libraryBatch(k)...) })
		return topic
	}
}

// consumeLibrary consumes topic with a new group of the adapter, handlers
// counting into cnt, until cnt has seen every message.
func consumeLibrary(b *testing.B, e *env, topic string, conc int, cnt *counter) {
	c, err := e.kb.NewConsumer(&broker.ConsumerOptions{Group: conformance.RandomName("g"), Concurrency: conc})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = c.Consume(ctx, topic, func(context.Context, *broker.Message) error { cnt.add(); return nil })
	}()
	cnt.wait(b)
}

// consumeRaw is consumeLibrary with the raw Reader.
func consumeRaw(b *testing.B, e *env, topic string, cnt *counter) {
	r := e.rawReader(topic, conformance.RandomName("g"))
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rawConsume(ctx, r, cnt)
	cnt.wait(b)
}

func rawConsume(ctx context.Context, r *kafka.Reader, cnt *counter) {
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return
		}
		cnt.add()
		if err := r.CommitMessages(ctx, m); err != nil {
			return
		}
	}
}

// BenchmarkEndToEnd: a member joined to its group first (a warm-up message
// went through), then `messages` published by 8 goroutines and consumed by
// that member; a round's time runs from the first publish to the last message
// handled. Reported: library/raw, the median of the per-round ratios (run
// with -benchtime 1x).
func BenchmarkEndToEnd(b *testing.B) {
	e := setup(b)
	p := e.kb.NewPublisher()
	defer p.Close()
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "raw", Run: func(b *testing.B) float64 {
			topic := e.topic(b)
			w := e.rawWriter()
			defer w.Close()
			r := e.rawReader(topic, conformance.RandomName("g"))
			defer r.Close()
			warm, cnt := newCounter(1), newCounter(messages)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					return
				}
				warm.add()
				_ = r.CommitMessages(ctx, m)
				rawConsume(ctx, r, cnt)
			}()
			if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Value: body}); err != nil {
				b.Fatal(err)
			}
			warm.wait(b)
			start := time.Now()
			publishN(b, messages, func(ctx context.Context, k int) error { return w.WriteMessages(ctx, rawBatch(topic, k)...) })
			cnt.wait(b)
			return messages / time.Since(start).Seconds()
		}},
		sidebyside.Case{Name: "library", Run: func(b *testing.B) float64 {
			topic := e.topic(b)
			c, err := e.kb.NewConsumer(&broker.ConsumerOptions{Group: conformance.RandomName("g")})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			warm, cnt := newCounter(1), newCounter(messages)
			var warmed atomic.Bool
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				_ = c.Consume(ctx, topic, func(context.Context, *broker.Message) error {
					if warmed.CompareAndSwap(false, true) {
						warm.add()
						return nil
					}
					cnt.add()
					return nil
				})
			}()
			if err := p.Publish(ctx, topic, &broker.Message{Body: body}); err != nil {
				b.Fatal(err)
			}
			warm.wait(b)
			start := time.Now()
			publishN(b, messages, func(ctx context.Context, k int) error { return p.Publish(ctx, topic, libraryBatch(k)...) })
			cnt.wait(b)
			return messages / time.Since(start).Seconds()
		}},
	)
}
