package rabbitbroker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

const wait = 30 * time.Second

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

func publisher(t *testing.T, uri string, o *rabbitbroker.Options) broker.Publisher {
	t.Helper()
	p, err := rabbitbroker.NewPublisher(ctx(t), uri, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func consumer(t *testing.T, uri string, o *rabbitbroker.Options, co broker.ConsumerOptions) broker.Consumer {
	t.Helper()
	c, err := rabbitbroker.NewConsumer(ctx(t), uri, o, &co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// consume runs c.Consume in a goroutine until the test ends or stop is called.
func consume(t *testing.T, c broker.Consumer, topic string, h broker.Handler) (stop func() error) {
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Consume(cctx, topic, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done; _ = c.Close() })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func rawChannel(t *testing.T, uri string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestTopologyMismatchIsInvalidArgument(t *testing.T) {
	uri := testenv.AMQPURL(t)
	topic := conformance.RandomName("rmq-mismatch")
	rabbitbroker.DeleteTopicAfter(t, uri, topic)
	p := publisher(t, uri, nil) // delivery_limit 20
	if err := p.Publish(ctx(t), topic, &broker.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	c := consumer(t, uri, &rabbitbroker.Options{DeliveryLimit: 30}, broker.ConsumerOptions{})
	err := c.Consume(ctx(t), topic, func(context.Context, *broker.Message) error { return nil })
	if !errors.Is(err, broker.ErrInvalidArgument) || !strings.Contains(err.Error(), "delivery_limit") {
		t.Fatalf("Consume on a queue declared with another delivery limit = %v, want ErrInvalidArgument naming delivery_limit", err)
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Errorf("the native error is not reachable with errors.As: %v", err)
	}
}

func TestUnroutableMessageIsNamed(t *testing.T) {
	uri := testenv.AMQPURL(t)
	topic := conformance.RandomName("rmq-unroutable")
	rabbitbroker.DeleteTopicAfter(t, uri, topic)
	p := publisher(t, uri, nil)
	if err := p.Publish(ctx(t), topic, &broker.Message{Body: []byte("declares")}); err != nil {
		t.Fatal(err)
	}
	// Someone deletes the only queue: the exchange routes nowhere.
	if _, err := rawChannel(t, uri).QueueDelete(topic+".default", false, false, false); err != nil {
		t.Fatal(err)
	}
	lost := &broker.Message{Body: []byte("would vanish without mandatory")}
	err := p.Publish(ctx(t), topic, lost)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Failed[0].ID != lost.ID || !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("Publish to an exchange without queues = %v, want a PublishError naming the message, wrapping ErrNotFound", err)
	}
	// The publisher forgot the topology, so the next publish declares it again.
	if err := p.Publish(ctx(t), topic, lost); err != nil {
		t.Fatalf("Publish after the queue was deleted and declared again: %v", err)
	}
}

func TestBrokerDeadLettersWhatCrashesEveryConsumer(t *testing.T) {
	uri := testenv.AMQPURL(t)
	topic := conformance.RandomName("rmq-crash")
	rabbitbroker.DeleteTopicAfter(t, uri, topic)
	o := &rabbitbroker.Options{DeliveryLimit: 3}
	p := publisher(t, uri, o)
	m := &broker.Message{Key: "k", Body: []byte("crashes the process"), Headers: map[string]string{"h": "v"}}
	if err := p.Publish(ctx(t), topic, m); err != nil {
		t.Fatal(err)
	}
	// A consumer that dies with the message in hand, again and again: its
	// channel closes without an ack or a reject, which no handler can report.
	conn, err := amqp.Dial(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deliveries := 0
	eventually(t, "the broker to dead-letter the message", func() bool {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		d, ok, err := ch.Get(topic+".default", false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			deliveries++
			t.Logf("delivery %d, x-delivery-count %v; crash", deliveries, d.Headers["x-delivery-count"])
			return false // the deferred Close returns it, as a crash would
		}
		q, err := ch.QueueDeclarePassive(topic+".dlq.default", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages == 1
	})
	if deliveries != 4 {
		t.Errorf("%d deliveries before the broker dead-lettered, want delivery_limit+1 = 4", deliveries)
	}
	var got *broker.Message
	var mu sync.Mutex
	consume(t, consumer(t, uri, o, broker.ConsumerOptions{MaxAttempts: 2}), topic+".dlq", func(ctx context.Context, dm *broker.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got = dm
		return nil
	})
	eventually(t, "the message in the dead-letter topic", func() bool { mu.Lock(); defer mu.Unlock(); return got != nil })
	if got.ID != m.ID || got.Key != m.Key || got.Headers["h"] != "v" || string(got.Body) != string(m.Body) {
		t.Errorf("dead letter = %+v, want the original", got)
	}
	var d amqp.Delivery
	if !got.As(&d) {
		t.Fatal("As(*amqp091.Delivery) = false")
	}
	if d.Headers["x-first-death-reason"] != "delivery_limit" {
		t.Errorf("x-first-death-reason = %v, want delivery_limit", d.Headers["x-first-death-reason"])
	}
}

func TestOrderedConsumersTakeTurns(t *testing.T) {
	uri := testenv.AMQPURL(t)
	topic := conformance.RandomName("rmq-ordered")
	rabbitbroker.DeleteTopicAfter(t, uri, topic)
	p := publisher(t, uri, nil)
	ordered := broker.ConsumerOptions{OrderByKey: true, Concurrency: 4}
	type seen struct {
		mu   sync.Mutex
		msgs []*broker.Message
	}
	var a, b seen
	record := func(s *seen) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.msgs = append(s.msgs, m)
			return nil
		}
	}
	count := func(s *seen) int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.msgs) }
	stopA := consume(t, consumer(t, uri, nil, ordered), topic, record(&a))
	first := make([]*broker.Message, 20)
	for i := range first {
		first[i] = &broker.Message{Key: "k", Body: []byte{byte(i)}}
	}
	if err := p.Publish(ctx(t), topic, first...); err != nil {
		t.Fatal(err)
	}
	eventually(t, "consumer A to take the first messages", func() bool { return count(&a) == len(first) })
	consume(t, consumer(t, uri, nil, ordered), topic, record(&b))
	second := make([]*broker.Message, 20)
	for i := range second {
		second[i] = &broker.Message{Key: "k", Body: []byte{byte(100 + i)}}
	}
	if err := p.Publish(ctx(t), topic, second...); err != nil {
		t.Fatal(err)
	}
	eventually(t, "consumer A to take the second batch too", func() bool { return count(&a) == len(first)+len(second) })
	if n := count(&b); n != 0 {
		t.Fatalf("the standby consumer handled %d messages while the active one ran", n)
	}
	if err := stopA(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	third := make([]*broker.Message, 20)
	for i := range third {
		third[i] = &broker.Message{Key: "k", Body: []byte{byte(200 + i)}}
	}
	if err := p.Publish(ctx(t), topic, third...); err != nil {
		t.Fatal(err)
	}
	eventually(t, "consumer B to take over", func() bool { return count(&b) == len(third) })
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, m := range b.msgs {
		if m.Body[0] != byte(200+i) {
			t.Fatalf("after the hand-over, message %d has body %d: out of order", i, m.Body[0])
		}
	}
}

func TestKeyLongerThanARoutingKey(t *testing.T) {
	uri := testenv.AMQPURL(t)
	topic := conformance.RandomName("rmq-longkey")
	rabbitbroker.DeleteTopicAfter(t, uri, topic)
	p := publisher(t, uri, nil)
	m := &broker.Message{Key: strings.Repeat("k", 300), Body: []byte{}}
	if err := p.Publish(ctx(t), topic, m); err != nil {
		t.Fatal(err)
	}
	got := make(chan *broker.Message, 1)
	consume(t, consumer(t, uri, nil, broker.ConsumerOptions{}), topic, func(ctx context.Context, m *broker.Message) error {
		got <- m
		return nil
	})
	select {
	case r := <-got:
		if r.Key != m.Key || len(r.Body) != 0 {
			t.Errorf("received key of %d bytes and body %q", len(r.Key), r.Body)
		}
	case <-time.After(wait):
		t.Fatal("message not received")
	}
}
