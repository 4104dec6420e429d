package brokerotel

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/brokerkit/broker"
)

// Tracing returns middleware that runs each delivery in a CONSUMER span
// "process <topic>". The span's parent is the trace context the producer
// injected into the message's headers (see WrapPublisher), read with the
// configured propagator; a recording span also links to it (the link is added
// just after the start, so samplers do not see it, and a span that does not
// record costs nothing for it). A message without that context gets a child
// of the handler context's span, or a new trace. The handler's context
// carries the span, and the producer's context when the span does not record,
// so that calls the handler makes still propagate the trace.
//
// The span starts with messaging.system, messaging.destination.name (the
// message's Topic), messaging.consumer.group.name (WithGroup) and
// messaging.operation.type and .name "process", which samplers see; a
// recording span also gets messaging.message.id, messaging.message.body.size
// and AttemptKey. When the handler fails or panics, the span records the
// error and has error status and error.type; OutcomeKey says what the
// consumer will do with the message, inferred as described on Metrics
// (WithMaxAttempts).
//
// Put it first in broker.Chain, so that its span covers the other middleware.
func Tracing(opts ...Option) broker.Middleware {
	c := newConfig(opts)
	t := &tracing{cfg: c, tracer: c.tracer()}
	return t.middleware
}

type tracing struct {
	cfg    config
	tracer trace.Tracer
	topics sync.Map // topic -> *processStart
}

// processStart is what starts the process spans of one topic, built once.
type processStart struct {
	name string
	opts []trace.SpanStartOption // kind and attributes
}

func (t *tracing) start(topic string) *processStart {
	if s, ok := t.topics.Load(topic); ok {
		return s.(*processStart)
	}
	s := &processStart{name: "process " + topic, opts: []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String(t.cfg.system),
			semconv.MessagingDestinationName(topic),
			semconv.MessagingConsumerGroupName(t.cfg.group),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
		),
	}}
	v, _ := t.topics.LoadOrStore(topic, s)
	return v.(*processStart)
}

func (t *tracing) middleware(next broker.Handler) broker.Handler {
	return func(ctx context.Context, m *broker.Message) error {
		st := t.start(m.Topic)
		var producer trace.SpanContext // from the headers; invalid without
		if len(m.Headers) > 0 {
			pctx := t.cfg.prop.Extract(ctx, propagation.MapCarrier(m.Headers))
			if sc := trace.SpanContextFromContext(pctx); sc.IsRemote() && !sc.Equal(trace.SpanContextFromContext(ctx)) {
				producer = sc
			}
			ctx = pctx
		}
		ctx, span := t.tracer.Start(ctx, st.name, st.opts...)
		recording := span.IsRecording()
		if recording {
			// The link is added after the start, so that a span that does not
			// record costs no allocation for it; a ParentBased sampler has
			// decided on the parent, the same producer span, anyway.
			if producer.IsValid() {
				span.AddLink(trace.Link{SpanContext: producer})
			}
			span.SetAttributes(
				semconv.MessagingMessageID(m.ID),
				semconv.MessagingMessageBodySize(len(m.Body)),
				AttemptKey.Int(m.Attempt),
			)
		}
		returned := false
		defer func() {
			if returned {
				return
			}
			// The handler panicked; the consumer recovers and redelivers or
			// dead-letters the message as for an error.
			if recording {
				span.SetAttributes(semconv.ErrorTypeKey.String("panic"),
					OutcomeKey.String(outcomeOf(ctx, m, nil, true, t.cfg.maxAttempts)))
				span.SetStatus(codes.Error, "handler panicked")
			}
			span.End()
		}()
		err := next(ctx, m)
		returned = true
		if recording {
			t.finish(ctx, span, m, err)
		}
		span.End()
		return err
	}
}

// finish sets the outcome of a recording span.
func (t *tracing) finish(ctx context.Context, span trace.Span, m *broker.Message, err error) {
	if err == nil {
		span.SetAttributes(OutcomeKey.String(OutcomeOK))
		return
	}
	span.SetAttributes(errorType(err), OutcomeKey.String(outcomeOf(ctx, m, err, false, t.cfg.maxAttempts)))
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}
