package brokerotel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/brokerkit/broker"
)

// Publisher-side metric names.
const (
	// MetricSentMessages counts the messages given to Publish, failed ones
	// included; those carry error.type.
	MetricSentMessages = "messaging.client.sent.messages"
	// MetricPublishFailed counts the messages a Publish did not get accepted: the
	// ones a *broker.PublishError lists, or all of them for any other error.
	MetricPublishFailed = "brokerkit.publisher.failed"
	// MetricOperationDuration is the duration of each Publish call, in seconds.
	MetricOperationDuration = "messaging.client.operation.duration"
)

// durationBuckets are the histogram boundaries, in seconds, that the
// messaging semantic conventions advise.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Publisher is a broker.Publisher that traces and measures another. It is safe
// for concurrent use.
type Publisher struct {
	next     broker.Publisher
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	system   attribute.KeyValue
	sent     metric.Int64Counter
	failed   metric.Int64Counter
	duration metric.Float64Histogram
	topics   sync.Map // topic -> *publishAttrs
}

var (
	_ broker.Publisher   = (*Publisher)(nil)
	_ broker.StatsReader = (*Publisher)(nil)
)

// WrapPublisher returns a Publisher that sends through p and, for each Publish:
//
//   - starts a span "send <topic>", a child of ctx, with messaging.system,
//     messaging.destination.name and messaging.operation.type and .name: of
//     kind PRODUCER for one message, whose context then travels in the
//     message; for a batch, of kind CLIENT with messaging.batch.message_count,
//     linked to one PRODUCER span "create <topic>" per message, whose context
//     travels in that message. A recording producer span also gets
//     messaging.message.id and messaging.message.body.size;
//   - gives each message with an empty ID a broker.NewID() first, as Publish
//     would, so that spans carry messaging.message.id;
//   - injects the trace context into each message's headers with the
//     configured propagator. The caller's Message and Headers map are not
//     modified (apart from the ID): p receives a copy of the message with a
//     copy of its headers, and only when there is something to inject. The
//     headers count toward broker.Message.Size: traceparent adds 66 bytes, so a
//     message within that of the broker's limit is rejected with
//     broker.ErrMessageTooLarge once wrapped;
//   - records the MetricSentMessages, MetricPublishFailed and
//     MetricOperationDuration metrics, and on error sets the span's status and
//     error.type.
//
// Pass WithMeterProvider(noop.NewMeterProvider()) for traces only, or
// WithTracerProvider(noop.NewTracerProvider()) for metrics only. Close closes
// p. WrapPublisher panics if p is nil.
func WrapPublisher(p broker.Publisher, opts ...Option) *Publisher {
	if p == nil {
		panic("brokerotel: WrapPublisher of a nil Publisher")
	}
	c := newConfig(opts)
	m := c.meter()
	w := &Publisher{
		next:   p,
		tracer: c.tracer(),
		prop:   c.prop,
		system: semconv.MessagingSystemKey.String(c.system),
	}
	w.sent = messageCounter(m, MetricSentMessages, "Messages given to Publish, failed ones included (with error.type).")
	w.failed = messageCounter(m, MetricPublishFailed, "Messages that a Publish did not get accepted by the broker.")
	w.duration = durationHistogram(m, MetricOperationDuration, "Duration of Publish calls.")
	return w
}

// handle reports an instrument that could not be created to the OpenTelemetry
// error handler; the API then returns a working no-op instrument.
// messageCounter is a counter of messages on m. An error goes to the
// OpenTelemetry error handler; the counter is then a no-op.
func messageCounter(m metric.Meter, name, description string) metric.Int64Counter {
	c, err := m.Int64Counter(name, metric.WithUnit("{message}"), metric.WithDescription(description))
	handle(err)
	return c
}

// durationHistogram is a histogram of durations in seconds on m.
func durationHistogram(m metric.Meter, name, description string) metric.Float64Histogram {
	h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(description),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	handle(err)
	return h
}

func handle(err error) {
	if err != nil {
		otel.Handle(fmt.Errorf("brokerotel: %w", err))
	}
}

// publishAttrs are what the spans and metrics of publishes to one topic share,
// built once.
type publishAttrs struct {
	base   []attribute.KeyValue
	add    []metric.AddOption
	rec    []metric.RecordOption
	send   string                  // the send span's name
	create string                  // the create spans' name
	single []trace.SpanStartOption // the send span of one message
	each   []trace.SpanStartOption // the create span of each message of a batch
}

func (p *Publisher) attrs(topic string) *publishAttrs {
	if a, ok := p.topics.Load(topic); ok {
		return a.(*publishAttrs)
	}
	base := []attribute.KeyValue{
		p.system,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
	}
	set := metric.WithAttributeSet(attribute.NewSet(base...))
	a := &publishAttrs{
		base:   base,
		add:    []metric.AddOption{set},
		rec:    []metric.RecordOption{set},
		send:   "send " + topic,
		create: "create " + topic,
		single: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(base...)},
		each: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			p.system,
			semconv.MessagingDestinationName(topic),
			semconv.MessagingOperationTypeCreate,
			semconv.MessagingOperationName("create"),
		)},
	}
	v, _ := p.topics.LoadOrStore(topic, a)
	return v.(*publishAttrs)
}

// Publish implements broker.Publisher; see WrapPublisher.
func (p *Publisher) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if len(msgs) == 0 {
		return p.next.Publish(ctx, topic, msgs...)
	}
	measure := p.sent.Enabled(ctx) || p.failed.Enabled(ctx) || p.duration.Enabled(ctx)
	var start time.Time
	if measure {
		start = time.Now()
	}
	a := p.attrs(topic)
	for _, m := range msgs {
		if m != nil && m.ID == "" {
			m.ID = broker.NewID()
		}
	}
	out := msgs // replaced by a copy when a message gets trace headers
	var span trace.Span
	if len(msgs) == 1 {
		ctx, span = p.tracer.Start(ctx, a.send, a.single...)
		if span.IsRecording() {
			setMessageAttrs(span, msgs[0])
		}
		if m := p.inject(ctx, msgs[0]); m != msgs[0] {
			out = []*broker.Message{m}
		}
	} else {
		links := make([]trace.Link, 0, len(msgs))
		copied := false
		for i, m := range msgs {
			if m == nil {
				continue // the wrapped Publish rejects it
			}
			cctx, create := p.tracer.Start(ctx, a.create, a.each...)
			if create.IsRecording() {
				setMessageAttrs(create, m)
			}
			if cp := p.inject(cctx, m); cp != m {
				if !copied {
					out, copied = slices.Clone(msgs), true
				}
				out[i] = cp
			}
			if sc := create.SpanContext(); sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc})
			}
			create.End()
		}
		attrs := append(a.base[:len(a.base):len(a.base)], semconv.MessagingBatchMessageCount(len(msgs)))
		ctx, span = p.tracer.Start(ctx, a.send, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attrs...), trace.WithLinks(links...))
	}

	err := p.next.Publish(ctx, topic, out...)

	if err == nil {
		if measure {
			p.sent.Add(ctx, int64(len(msgs)), a.add...)
			p.duration.Record(ctx, time.Since(start).Seconds(), a.rec...)
		}
		span.End()
		return nil
	}
	p.failure(ctx, span, a, len(msgs), err, measure, start)
	return err
}

// failure records a failed Publish of n messages on its span, and on the
// metrics when measure is set.
func (p *Publisher) failure(ctx context.Context, span trace.Span, a *publishAttrs, n int, err error, measure bool, start time.Time) {
	et := errorType(err)
	span.SetAttributes(et)
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	span.End()
	if !measure {
		return
	}
	failed := n
	var pe *broker.PublishError
	if errors.As(err, &pe) && len(pe.Failed) <= n {
		failed = len(pe.Failed)
	}
	if ok := n - failed; ok > 0 {
		p.sent.Add(ctx, int64(ok), a.add...)
	}
	errSet := metric.WithAttributeSet(attribute.NewSet(append(a.base[:len(a.base):len(a.base)], et)...))
	p.sent.Add(ctx, int64(failed), errSet)
	p.failed.Add(ctx, int64(failed), errSet)
	p.duration.Record(ctx, time.Since(start).Seconds(), errSet)
}

// setMessageAttrs sets the per-message attributes of m, which may be nil.
func setMessageAttrs(span trace.Span, m *broker.Message) {
	if m != nil {
		span.SetAttributes(semconv.MessagingMessageID(m.ID), semconv.MessagingMessageBodySize(len(m.Body)))
	}
}

// inject returns m with the trace context of ctx in its headers: a shallow
// copy with a new headers map when the propagator writes anything, else m.
func (p *Publisher) inject(ctx context.Context, m *broker.Message) *broker.Message {
	if m == nil {
		return nil
	}
	if _, w3c := p.prop.(propagation.TraceContext); w3c && !trace.SpanContextFromContext(ctx).IsValid() {
		return m // nothing to write; saves the carrier's allocation
	}
	c := headerCarrier{src: m.Headers}
	p.prop.Inject(ctx, &c)
	if c.dst == nil {
		return m
	}
	cp := *m
	cp.Headers = c.dst
	return &cp
}

// headerCarrier is a propagation.TextMapCarrier that reads a message's headers
// and writes to a copy of them made on the first Set.
type headerCarrier struct {
	src, dst map[string]string
}

func (c *headerCarrier) Get(key string) string {
	if c.dst != nil {
		return c.dst[key]
	}
	return c.src[key]
}

func (c *headerCarrier) Set(key, value string) {
	if c.dst == nil {
		c.dst = make(map[string]string, len(c.src)+2)
		for k, v := range c.src {
			c.dst[k] = v
		}
	}
	c.dst[key] = value
}

func (c *headerCarrier) Keys() []string {
	h := c.dst
	if h == nil {
		h = c.src
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Close closes the wrapped Publisher.
func (p *Publisher) Close() error { return p.next.Close() }

// Stats implements broker.StatsReader when the wrapped Publisher does;
// otherwise it returns an error wrapping broker.ErrUnsupported.
func (p *Publisher) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	if sr, ok := p.next.(broker.StatsReader); ok {
		return sr.Stats(ctx, topic, group)
	}
	return broker.Stats{}, fmt.Errorf("brokerotel: stats: %w", broker.ErrUnsupported)
}

// Unwrap returns the wrapped Publisher.
func (p *Publisher) Unwrap() broker.Publisher { return p.next }
