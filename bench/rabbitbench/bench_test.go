package rabbitbench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// The settings both sides share.
const (
	bodySize    = 256
	window      = 256 // publisher confirms outstanding on the one channel
	concurrency = 16  // library handlers; the raw consumer acks inline
	batch       = 64  // messages per library Publish call
	// publishers call Publish at once: twice what fills the window, so that it
	// stays full while a caller builds its next batch, as the raw publisher's
	// sliding window does. The window still caps what is unconfirmed at 256.
	publishers = 2 * window / batch
)

// prefetch is the broker-side prefetch the library sets for concurrency
// (twice the engine's window of 2 x concurrency); the raw consumer gets the same.
const prefetch = 4 * concurrency

var body = make([]byte, bodySize)

// rounds is how many times each benchmark alternates raw and library runs.
// The broker, not the client, is the bottleneck, and on a shared machine its
// speed drifts; alternating lets each library run be compared with the raw run
// beside it. Repeated names get the suffixes #01, #02.
const rounds = 5

// sideBySide runs raw and library alternately, rounds times, with extra
// variants (name, func) after them in each round.
func sideBySide(b *testing.B, raw, library func(b *testing.B), extra ...any) {
	for range rounds {
		b.Run("raw", raw)
		b.Run("library", library)
		for i := 0; i+1 < len(extra); i += 2 {
			b.Run(extra[i].(string), extra[i+1].(func(*testing.B)))
		}
	}
}

// env is a broker connection for setup, and the URI.
type env struct {
	uri  string
	conn *amqp.Connection
}

func setup(b *testing.B) *env {
	uri := testenv.AMQPURL(b)
	conn, err := amqp.Dial(uri)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return &env{uri: uri, conn: conn}
}

// topic declares the same topology the library declares for a topic's
// default group: a topic exchange and a quorum queue bound with "#", and
// removes both after the benchmark.
func (e *env) topic(b *testing.B) (topic, queue string) {
	topic = conformance.RandomName("bench")
	queue = topic + "." + broker.DefaultGroup
	ch, err := e.conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	dlx := topic + ".dlq"
	must(b, ch.ExchangeDeclare(dlx, "topic", true, false, false, false, nil))
	_, err = ch.QueueDeclare(dlx+".default", true, false, false, false, amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(1_000_000)})
	must(b, err)
	must(b, ch.QueueBind(dlx+".default", "#", dlx, false, nil))
	must(b, ch.ExchangeDeclare(topic, "topic", true, false, false, false, nil))
	_, err = ch.QueueDeclare(queue, true, false, false, false, amqp.Table{
		"x-queue-type": "quorum", "x-delivery-limit": int32(rabbitbroker.DefaultDeliveryLimit),
		"x-dead-letter-exchange": dlx, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
	must(b, err)
	must(b, ch.QueueBind(queue, "#", topic, false, nil))
	b.Cleanup(func() {
		ch, err := e.conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		_, _ = ch.QueueDelete(queue, false, false, false)
		_, _ = ch.QueueDelete(dlx+".default", false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
		_ = ch.ExchangeDelete(dlx, false, false)
	})
	return topic, queue
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// rawPublish publishes n messages on one confirm-mode channel, keeping up to
// window confirms outstanding, and waits for every confirm.
func rawPublish(b *testing.B, conn *amqp.Connection, topic string, n int) {
	ch, err := conn.Channel()
	must(b, err)
	defer ch.Close()
	must(b, ch.Confirm(false))
	ring := make([]*amqp.DeferredConfirmation, 0, window)
	for i := 0; i < n; i++ {
		if len(ring) == window {
			if !ring[0].Wait() {
				b.Fatal("nack")
			}
			ring = ring[1:]
		}
		dc, err := ch.PublishWithDeferredConfirm(topic, "", true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: fmt.Sprint(i), Timestamp: time.Now(), Body: body})
		must(b, err)
		ring = append(ring, dc)
	}
	for _, dc := range ring {
		if !dc.Wait() {
			b.Fatal("nack")
		}
	}
}

// libPublish publishes n messages with publishers goroutines, each calling
// Publish with batches of batch messages: at most window unconfirmed.
func libPublish(b *testing.B, p broker.Publisher, topic string, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]*broker.Message, 0, batch)
			for {
				start := next.Add(batch) - batch
				if start >= int64(n) {
					return
				}
				msgs = msgs[:0]
				for i := start; i < min(start+batch, int64(n)); i++ {
					msgs = append(msgs, &broker.Message{Body: body})
				}
				if err := p.Publish(ctx, topic, msgs...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func libPublisher(b *testing.B, e *env) broker.Publisher {
	p, err := rabbitbroker.NewPublisher(context.Background(), e.uri, &rabbitbroker.Options{ConfirmWindow: window, ChannelPool: 1})
	must(b, err)
	b.Cleanup(func() { _ = p.Close() })
	return p
}

func report(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublish: b.N confirmed publishes.
func BenchmarkPublish(b *testing.B) {
	e := setup(b)
	sideBySide(b, func(b *testing.B) {
		topic, _ := e.topic(b)
		b.ResetTimer()
		rawPublish(b, e.conn, topic, b.N)
		report(b)
	}, func(b *testing.B) {
		p := libPublisher(b, e)
		topic, _ := e.topic(b)
		b.ReportAllocs()
		b.ResetTimer()
		libPublish(b, p, topic, b.N)
		report(b)
	})
}

// rawConsume consumes n messages from queue, acking each, and returns when
// the last was acknowledged.
// It may run in a goroutine of its own, so it reports failures with b.Error.
func rawConsume(b *testing.B, conn *amqp.Connection, queue string, n int, started chan<- struct{}) {
	rawConsumeAcking(b, conn, queue, n, started, 1)
}

// rawConsumeAcking acks every ackEvery-th delivery with multiple=true, the
// hand-written form of what the library's acker does.
func rawConsumeAcking(b *testing.B, conn *amqp.Connection, queue string, n int, started chan<- struct{}, ackEvery int) {
	defer close(started)
	ch, err := conn.Channel()
	if err != nil {
		b.Error(err)
		return
	}
	defer ch.Close()
	if err := ch.Qos(prefetch, 0, false); err != nil {
		b.Error(err)
		return
	}
	ds, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		b.Error(err)
		return
	}
	started <- struct{}{}
	for i := 0; i < n; i++ {
		d, ok := <-ds
		if !ok {
			b.Error("deliveries closed")
			return
		}
		if (i+1)%ackEvery != 0 && i+1 != n {
			continue
		}
		if err := d.Ack(ackEvery > 1); err != nil {
			b.Error(err)
			return
		}
	}
}

// libConsume consumes n messages with the library and returns when n were
// handled (the last acks are in flight, as with the raw consumer).
func libConsume(b *testing.B, e *env, topic string, n int, started chan<- struct{}) {
	defer close(started)
	c, err := rabbitbroker.NewConsumer(context.Background(), e.uri, nil, &broker.ConsumerOptions{Concurrency: concurrency})
	if err != nil {
		b.Error(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var handled atomic.Int64
	done := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		failed <- c.Consume(ctx, topic, func(context.Context, *broker.Message) error {
			if handled.Add(1) == int64(n) {
				close(done)
			}
			return nil
		})
	}()
	started <- struct{}{}
	select {
	case <-done:
	case err := <-failed:
		b.Errorf("Consume returned %v after %d of %d messages", err, handled.Load(), n)
	}
}

// BenchmarkConsume: b.N messages already in the queue, consumed and acked.
// raw-ack16 is a raw consumer that acks every 16th delivery with
// multiple=true, for reference: the library groups acks the same way.
func BenchmarkConsume(b *testing.B) {
	e := setup(b)
	sideBySide(b, func(b *testing.B) {
		topic, queue := e.topic(b)
		rawPublish(b, e.conn, topic, b.N)
		b.ResetTimer()
		rawConsume(b, e.conn, queue, b.N, make(chan struct{}, 1))
		report(b)
	}, func(b *testing.B) {
		topic, _ := e.topic(b)
		rawPublish(b, e.conn, topic, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		libConsume(b, e, topic, b.N, make(chan struct{}, 1))
		report(b)
	}, "raw-ack16", func(b *testing.B) {
		topic, queue := e.topic(b)
		rawPublish(b, e.conn, topic, b.N)
		b.ResetTimer()
		rawConsumeAcking(b, e.conn, queue, b.N, make(chan struct{}, 1), 16)
		report(b)
	})
}

// BenchmarkEndToEnd: b.N messages published and consumed at the same time,
// timed until the last was handled.
func BenchmarkEndToEnd(b *testing.B) {
	e := setup(b)
	sideBySide(b, func(b *testing.B) {
		topic, queue := e.topic(b)
		pubConn, err := amqp.Dial(e.uri)
		must(b, err)
		defer pubConn.Close()
		b.ResetTimer()
		started, done := make(chan struct{}, 1), make(chan struct{})
		go func() { defer close(done); rawConsume(b, e.conn, queue, b.N, started) }()
		<-started
		rawPublish(b, pubConn, topic, b.N)
		<-done
		report(b)
	}, func(b *testing.B) {
		p := libPublisher(b, e)
		topic, _ := e.topic(b)
		b.ReportAllocs()
		b.ResetTimer()
		started, done := make(chan struct{}, 1), make(chan struct{})
		go func() { defer close(done); libConsume(b, e, topic, b.N, started) }()
		<-started
		libPublish(b, p, topic, b.N)
		<-done
		report(b)
	})
}
