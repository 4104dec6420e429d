package brokerotel_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/brokerotel"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/driver"
	"github.com/brokerkit/broker/internal/brokertest"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// setupTimeout bounds connecting to a broker and creating a topic.
const setupTimeout = 30 * time.Second

// realBroker is a broker the tests in this file run on, each as a subtest.
type realBroker struct {
	brokertest.Target
	// system is the messaging.system the broker is reported as.
	system string
	// open returns a fresh topic with its dead-letter topic, and a way to
	// publish to and consume from it, all removed when the test ends. It skips
	// the test when the broker is not available (fails with CI=true).
	open func(t *testing.T, group string) onBroker
}

var realBrokers = []realBroker{
	{Target: brokertest.Mem, system: brokerotel.DefaultSystem, open: openMem},
	{Target: brokertest.RabbitMQ, system: semconv.MessagingSystemRabbitMQ.Value.AsString(), open: openRabbit},
	{Target: brokertest.Kafka, system: semconv.MessagingSystemKafka.Value.AsString(), open: openKafka},
	{Target: brokertest.SQS, system: semconv.MessagingSystemAWSSQS.Value.AsString(), open: openSQS},
}

// group is the consumer group the tests use: another than the default where
// the broker has groups (fan-out), so that the attribute is checked against a
// name the test chose. An SQS queue is one group.
func (rb realBroker) group() string {
	if rb.Capabilities.FanOut {
		return "billing"
	}
	return broker.DefaultGroup
}

// onBroker is a fresh topic on one broker.
type onBroker struct {
	topic       string
	newPub      func(t *testing.T) broker.Publisher
	newConsumer func(t *testing.T, o broker.ConsumerOptions) *driver.Consumer
}

// adapterBroker is what the mem, Kafka and SQS adapters' Broker offers.
type adapterBroker interface {
	NewPublisher() *driver.Publisher
	NewConsumer(opts *broker.ConsumerOptions) (*driver.Consumer, error)
}

// onAdapter is topic on b; the publishers are closed when the test ends.
func onAdapter(topic string, b adapterBroker) onBroker {
	return onBroker{
		topic: topic,
		newPub: func(t *testing.T) broker.Publisher {
			p := b.NewPublisher()
			t.Cleanup(func() { _ = p.Close() })
			return p
		},
		newConsumer: func(t *testing.T, o broker.ConsumerOptions) *driver.Consumer {
			c, err := b.NewConsumer(&o)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	}
}

func openMem(t *testing.T, _ string) onBroker {
	return onAdapter(conformance.RandomName("otel"), newMem(t, nil))
}

func openRabbit(t *testing.T, group string) onBroker {
	uri := testenv.AMQPURL(t)
	topic := conformance.RandomName("otel")
	brokertest.RabbitMQ.DeleteAfter(t, topic, group)
	return onBroker{
		topic: topic,
		newPub: func(t *testing.T) broker.Publisher {
			ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
			defer cancel()
			p, err := rabbitbroker.NewPublisher(ctx, uri, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Close() })
			return p
		},
		newConsumer: func(t *testing.T, o broker.ConsumerOptions) *driver.Consumer {
			ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
			defer cancel()
			c, err := rabbitbroker.NewConsumer(ctx, uri, nil, &o)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	}
}

func openKafka(t *testing.T, group string) onBroker {
	b, err := kafkabroker.New(testenv.KafkaBrokers(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	topic := conformance.RandomName("otel")
	brokertest.Kafka.DeleteAfter(t, topic, group)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := b.CreateTopic(ctx, topic, 3); err != nil {
		t.Fatalf("CreateTopic(%q): %v", topic, err)
	}
	return onAdapter(topic, b)
}

func openSQS(t *testing.T, _ string) onBroker {
	// Short polls and leases, so that closing the consumer is quick and a
	// message a closed poll took comes back soon.
	b, err := sqsbroker.New(brokertest.SQSClient(t), &sqsbroker.Options{VisibilityTimeout: 2 * time.Second, WaitTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	topic := conformance.RandomName("otel")
	brokertest.SQS.DeleteAfter(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := b.CreateQueue(ctx, topic, ""); err != nil {
		t.Fatalf("CreateQueue(%q): %v", topic, err)
	}
	return onAdapter(topic, b)
}

// start consumes on.topic with a new consumer and h until the test ends. A
// group other than the default receives only what is published after it
// subscribed on some brokers, so start waits for that.
func (on onBroker) start(t *testing.T, o broker.ConsumerOptions, h broker.Handler) *driver.Consumer {
	t.Helper()
	o.Logger = slog.New(slog.DiscardHandler)
	c := on.newConsumer(t, o)
	run(t, c, on.topic, h)
	if o.Group != "" && o.Group != broker.DefaultGroup {
		waitFor(t, "the consumer to join its group", func() bool {
			st, err := c.Stats(context.Background(), on.topic, o.Group)
			return err == nil && st.Consumers > 0
		})
	}
	return c
}

// On every broker, one trace runs from the publishing request through the
// message to its handler: the process span is a child of (and linked to) the
// producer span whose context travelled in the message.
func TestTraceContinuityOnBrokers(t *testing.T) {
	for _, rb := range realBrokers {
		t.Run(rb.Name, func(t *testing.T) {
			group := rb.group()
			on := rb.open(t, group)
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			opts := []brokerotel.Option{brokerotel.WithTracerProvider(tp), noMeter,
				brokerotel.WithSystem(rb.system), brokerotel.WithGroup(group)}

			pub := brokerotel.WrapPublisher(on.newPub(t), opts...)
			h, got := recordingHandler(4)
			on.start(t, broker.ConsumerOptions{Group: group}, broker.Chain(h, brokerotel.Tracing(opts...)))

			ctx, request := tp.Tracer("test").Start(context.Background(), "request")
			single := &broker.Message{Body: []byte("one")}
			if err := pub.Publish(ctx, on.topic, single); err != nil {
				t.Fatal(err)
			}
			batch := []*broker.Message{{Body: []byte("b1")}, {Body: []byte("b2")}, {Body: []byte("b3")}}
			if err := pub.Publish(ctx, on.topic, batch...); err != nil {
				t.Fatal(err)
			}
			request.End()

			handled := map[string]trace.SpanContext{} // message ID -> the handler context's span
			for range 4 {
				r := recv(t, got)
				handled[r.msg.ID] = r.span
			}
			process := "process " + on.topic
			waitFor(t, "4 process spans", func() bool { return len(exported(exp, process)) == 4 })

			// The span whose context each message carried: the send span of a
			// single message, the create span of each message of a batch.
			producers := map[string]tracetest.SpanStub{}
			for _, name := range []string{"send " + on.topic, "create " + on.topic} {
				for _, s := range exported(exp, name) {
					if s.SpanKind != trace.SpanKindProducer {
						continue
					}
					checkAttrs(t, s, map[attribute.Key]string{
						semconv.MessagingSystemKey:          rb.system,
						semconv.MessagingDestinationNameKey: on.topic,
					})
					producers[stubAttr(s, semconv.MessagingMessageIDKey).AsString()] = s
				}
			}
			ids := []string{single.ID, batch[0].ID, batch[1].ID, batch[2].ID}
			for _, id := range ids {
				if _, ok := producers[id]; !ok {
					t.Errorf("no producer span for message %s", id)
				}
			}
			for _, p := range exported(exp, process) {
				id := stubAttr(p, semconv.MessagingMessageIDKey).AsString()
				producer, ok := producers[id]
				if !ok {
					t.Errorf("process span for unknown message %q", id)
					continue
				}
				if p.SpanKind != trace.SpanKindConsumer {
					t.Errorf("%s: process span kind %v, want consumer", id, p.SpanKind)
				}
				if !p.Parent.IsRemote() || p.Parent.SpanID() != producer.SpanContext.SpanID() {
					t.Errorf("%s: process span parent %v, want the remote producer span %v", id, p.Parent.SpanID(), producer.SpanContext.SpanID())
				}
				if l := p.Links; len(l) != 1 || l[0].SpanContext.SpanID() != producer.SpanContext.SpanID() ||
					l[0].SpanContext.TraceID() != producer.SpanContext.TraceID() {
					t.Errorf("%s: process span links %v, want one to the producer span", id, p.Links)
				}
				if tid := request.SpanContext().TraceID(); p.SpanContext.TraceID() != tid || producer.SpanContext.TraceID() != tid {
					t.Errorf("%s: producer and process spans are not both in the request's trace", id)
				}
				if !handled[id].Equal(p.SpanContext) {
					t.Errorf("%s: the handler's context holds span %v, want the process span %v", id, handled[id].SpanID(), p.SpanContext.SpanID())
				}
				checkAttrs(t, p, map[attribute.Key]string{
					semconv.MessagingSystemKey:            rb.system,
					semconv.MessagingDestinationNameKey:   on.topic,
					semconv.MessagingOperationTypeKey:     "process",
					semconv.MessagingOperationNameKey:     "process",
					semconv.MessagingConsumerGroupNameKey: group,
					brokerotel.OutcomeKey:                 brokerotel.OutcomeOK,
				})
				if a := stubAttr(p, brokerotel.AttemptKey).AsInt64(); a != 1 {
					t.Errorf("%s: attempt %d, want 1", id, a)
				}
			}
		})
	}
}

// A known run on every broker, with MaxAttempts 2: 10 messages published in
// one call; "flaky" fails once and then succeeds, "poison" fails on both its
// attempts and is dead-lettered.
func TestMetricsKnownRunOnBrokers(t *testing.T) {
	for _, rb := range realBrokers {
		t.Run(rb.Name, func(t *testing.T) {
			group := rb.group()
			on := rb.open(t, group)
			mp, reader := newMeter(t)
			copts := broker.ConsumerOptions{Group: group, MaxAttempts: 2, Backoff: broker.ConstantBackoff(10 * time.Millisecond), Concurrency: 4}
			opts := []brokerotel.Option{brokerotel.WithMeterProvider(mp), noTracer,
				brokerotel.WithSystem(rb.system), brokerotel.WithConsumerOptions(copts)}

			h := func(ctx context.Context, m *broker.Message) error {
				switch {
				case m.ID == "flaky" && m.Attempt == 1:
					return errors.New("transient")
				case m.ID == "poison":
					return errors.New("always")
				}
				return nil
			}
			c := on.start(t, copts, broker.Chain(h, brokerotel.Metrics(opts...)))
			msgs := []*broker.Message{{ID: "flaky"}, {ID: "poison"}}
			for i := range 8 {
				msgs = append(msgs, &broker.Message{ID: fmt.Sprintf("ok-%d", i)})
			}
			pub := brokerotel.WrapPublisher(on.newPub(t), opts...)
			if err := pub.Publish(context.Background(), on.topic, msgs...); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "12 handler calls, the dead letter parked and nothing left", func() bool {
				st, err := c.Stats(context.Background(), on.topic, group)
				return err == nil && st.DeadLetters == 1 && st.Depth == 0 && st.InFlight == 0 &&
					sum(collect(t, reader), brokerotel.MetricHandled) == 12
			})

			rm := collect(t, reader)
			base := []attribute.KeyValue{
				semconv.MessagingSystemKey.String(rb.system),
				semconv.MessagingDestinationName(on.topic),
				semconv.MessagingConsumerGroupName(group),
			}
			outcome := func(o string) []attribute.KeyValue { return append(base[:3:3], brokerotel.OutcomeKey.String(o)) }
			sent := []attribute.KeyValue{semconv.MessagingSystemKey.String(rb.system), semconv.MessagingDestinationName(on.topic)}
			for _, c := range []struct {
				name      string
				got, want int64
			}{
				{"published", sum(rm, brokerotel.MetricSentMessages, sent...), 10},
				{"publish failed", sum(rm, brokerotel.MetricPublishFailed), 0},
				{"publish duration count", int64(histCount(rm, brokerotel.MetricOperationDuration, sent...)), 1},
				{"handled", sum(rm, brokerotel.MetricHandled, base...), 12},
				{"handled ok", sum(rm, brokerotel.MetricHandled, outcome(brokerotel.OutcomeOK)...), 9},
				{"handled retry", sum(rm, brokerotel.MetricHandled, outcome(brokerotel.OutcomeRetry)...), 2},
				{"handled dead_letter", sum(rm, brokerotel.MetricHandled, outcome(brokerotel.OutcomeDeadLetter)...), 1},
				{"handled cancelled", sum(rm, brokerotel.MetricHandled, outcome(brokerotel.OutcomeCancelled)...), 0},
				{"failed", sum(rm, brokerotel.MetricFailed, base...), 3},
				{"failed retry", sum(rm, brokerotel.MetricFailed, outcome(brokerotel.OutcomeRetry)...), 2},
				{"failed dead_letter", sum(rm, brokerotel.MetricFailed, outcome(brokerotel.OutcomeDeadLetter)...), 1},
				{"retried", sum(rm, brokerotel.MetricRetried, base...), 2},
				{"dead-lettered", sum(rm, brokerotel.MetricDeadLettered, base...), 1},
				{"in flight", sum(rm, brokerotel.MetricInFlight, base...), 0},
				{"process duration count", int64(histCount(rm, brokerotel.MetricProcessDuration, base...)), 12},
				{"process duration count ok", int64(histCount(rm, brokerotel.MetricProcessDuration, outcome(brokerotel.OutcomeOK)...)), 9},
				{"process duration count retry", int64(histCount(rm, brokerotel.MetricProcessDuration, outcome(brokerotel.OutcomeRetry)...)), 2},
				{"process duration count dead_letter", int64(histCount(rm, brokerotel.MetricProcessDuration, outcome(brokerotel.OutcomeDeadLetter)...)), 1},
			} {
				if c.got != c.want {
					t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
				}
			}
		})
	}
}

// exported returns the exported spans called name.
func exported(exp *tracetest.InMemoryExporter, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// stubAttr returns the value of key on s, or an empty value.
func stubAttr(s tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// checkAttrs checks string attributes of s.
func checkAttrs(t *testing.T, s tracetest.SpanStub, want map[attribute.Key]string) {
	t.Helper()
	for k, v := range want {
		if got := stubAttr(s, k).Emit(); got != v {
			t.Errorf("span %q: %s = %q, want %q", s.Name, k, got, v)
		}
	}
}
