package brokerotel

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/brokerkit/broker"
)

// ScopeName is the instrumentation scope of the tracers and meters this
// package obtains from the configured providers.
const ScopeName = "github.com/brokerkit/broker/brokerotel"

// DefaultSystem is the messaging.system reported when neither WithSystem nor
// WithURL names the broker.
const DefaultSystem = "brokerkit"

// Attributes brokerkit adds beside the OpenTelemetry messaging semantic
// conventions (semconv v1.43.0), which have no broker-neutral equivalent.
const (
	// AttemptKey is the delivery attempt of a processed message: 1 on the first
	// delivery, as broker.Message.Attempt.
	AttemptKey = attribute.Key("brokerkit.message.attempt")
	// OutcomeKey is what became of a handled message; its values are the
	// Outcome constants.
	OutcomeKey = attribute.Key("brokerkit.outcome")
)

// Outcomes, the values of OutcomeKey on process spans and consumer metrics.
// They are inferred from the handler's result as the consumer engine decides
// (see Metrics), not observed from the broker.
const (
	// OutcomeOK: the handler returned nil; the message is acknowledged.
	OutcomeOK = "ok"
	// OutcomeRetry: the handler failed and the message will be redelivered.
	OutcomeRetry = "retry"
	// OutcomeDeadLetter: the handler failed with a Permanent error or on the last
	// attempt; the message goes to the dead-letter topic.
	OutcomeDeadLetter = "dead_letter"
	// OutcomeCancelled: the handler failed after its context was cancelled
	// because the consumer was shutting down; the message is handed back to the
	// broker and is not counted as failed.
	OutcomeCancelled = "cancelled"
)

// Option configures Tracing, Metrics, WrapPublisher and ObserveStats. Options
// that do not concern a function are ignored by it.
type Option func(*config)

type config struct {
	tp          trace.TracerProvider
	mp          metric.MeterProvider
	prop        propagation.TextMapPropagator
	system      string
	group       string
	maxAttempts int
}

func newConfig(opts []Option) config {
	c := config{system: DefaultSystem, group: broker.DefaultGroup, maxAttempts: defaultMaxAttempts}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = propagation.TraceContext{}
	}
	return c
}

// defaultMaxAttempts is broker.ConsumerOptions' default MaxAttempts.
var defaultMaxAttempts = broker.ConsumerOptions{}.WithDefaults().MaxAttempts

func (c *config) tracer() trace.Tracer {
	return c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
}

func (c *config) meter() metric.Meter {
	return c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
}

// WithTracerProvider sets where spans go. Nil or unset means
// otel.GetTracerProvider(), resolved when the middleware or wrapper is built
// (the global provider forwards to one set later).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets where metrics go. Nil or unset means
// otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithPropagator sets how trace context is written to and read from message
// headers. Nil or unset means propagation.TraceContext{} (the W3C traceparent
// and tracestate headers), not the global propagator, which is a no-op until a
// service sets one. Pass propagation.NewCompositeTextMapPropagator(
// propagation.TraceContext{}, propagation.Baggage{}) to carry baggage too.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

// WithSystem sets the messaging.system attribute, such as "rabbitmq", "kafka"
// or "aws_sqs". Empty or unset means DefaultSystem.
func WithSystem(system string) Option {
	return func(c *config) {
		if system != "" {
			c.system = system
		}
	}
}

// WithURL takes what it can from a broker URL, as given to
// broker.OpenPublisher or broker.OpenConsumer: messaging.system from the
// scheme (amqp and amqps give "rabbitmq", kafka gives "kafka", sqs gives
// "aws_sqs", mem gives DefaultSystem, another scheme is used as it is), and
// the group and max_attempts query parameters, when present, as WithGroup and
// WithMaxAttempts. Nothing else is read, credentials included; a URL that does
// not parse changes nothing.
func WithURL(rawURL string) Option {
	u, err := url.Parse(rawURL)
	if err != nil {
		return func(*config) {}
	}
	scheme := strings.ToLower(u.Scheme)
	system := map[string]string{
		"amqp":  semconv.MessagingSystemRabbitMQ.Value.AsString(),
		"amqps": semconv.MessagingSystemRabbitMQ.Value.AsString(),
		"kafka": semconv.MessagingSystemKafka.Value.AsString(),
		"sqs":   semconv.MessagingSystemAWSSQS.Value.AsString(),
		"mem":   DefaultSystem,
	}[scheme]
	if system == "" {
		system = scheme
	}
	q := u.Query()
	group := q.Get("group")
	maxAttempts, _ := strconv.Atoi(q.Get("max_attempts"))
	return func(c *config) {
		WithSystem(system)(c)
		WithGroup(group)(c)
		if maxAttempts > 0 {
			c.maxAttempts = maxAttempts
		}
	}
}

// WithGroup sets the messaging.consumer.group.name attribute of consumer spans
// and metrics, and the group ObserveStats reads for a Target without one. It
// must be the consumer's ConsumerOptions.Group, which a message does not carry.
// Empty or unset means broker.DefaultGroup.
func WithGroup(group string) Option {
	return func(c *config) {
		if group != "" {
			c.group = group
		}
	}
}

// WithMaxAttempts gives Metrics and Tracing the consumer's
// ConsumerOptions.MaxAttempts, from which they infer that a failed delivery
// is dead-lettered. Zero, negative or unset means 5, the ConsumerOptions
// default.
func WithMaxAttempts(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxAttempts = n
		} else {
			c.maxAttempts = defaultMaxAttempts
		}
	}
}

// WithConsumerOptions is WithGroup and WithMaxAttempts from the options the
// consumer was built with, so that the two cannot disagree.
func WithConsumerOptions(o broker.ConsumerOptions) Option {
	o = o.WithDefaults()
	return func(c *config) {
		WithGroup(o.Group)(c)
		WithMaxAttempts(o.MaxAttempts)(c)
	}
}

// errorSentinels maps the broker sentinels to error.type values, so that the
// attribute stays low-cardinality whatever the adapter's message says.
var errorSentinels = []struct {
	err  error
	name string
}{
	{context.Canceled, "context_canceled"},
	{context.DeadlineExceeded, "deadline_exceeded"},
	{broker.ErrClosed, "closed"},
	{broker.ErrInvalidArgument, "invalid_argument"},
	{broker.ErrMessageTooLarge, "message_too_large"},
	{broker.ErrNotFound, "not_found"},
	{broker.ErrUnsupported, "unsupported"},
	{broker.ErrPermissionDenied, "permission_denied"},
	{broker.ErrUnavailable, "unavailable"},
	{broker.ErrFull, "full"},
}

// errorType is the error.type attribute for err: "permanent" or "panic" for
// handler errors, the snake-case name of a broker sentinel err wraps, or
// "_OTHER".
func errorType(err error) attribute.KeyValue {
	var pe *broker.PanicError
	switch {
	case broker.IsPermanent(err):
		return semconv.ErrorTypeKey.String("permanent")
	case errors.As(err, &pe):
		return semconv.ErrorTypeKey.String("panic")
	}
	for _, s := range errorSentinels {
		if errors.Is(err, s.err) {
			return semconv.ErrorTypeKey.String(s.name)
		}
	}
	return semconv.ErrorTypeOther
}

// outcomeOf infers what the consumer engine does with a delivery after the
// handler returned err (panicked reports a handler that did not return). It
// mirrors driver's process: nil acks; a failure after the handler context
// ended releases the message; a Permanent error or the last attempt
// dead-letters; anything else is redelivered.
func outcomeOf(ctx context.Context, m *broker.Message, err error, panicked bool, maxAttempts int) string {
	switch {
	case err == nil && !panicked:
		return OutcomeOK
	case ctx.Err() != nil:
		return OutcomeCancelled
	case broker.IsPermanent(err) || m.Attempt >= maxAttempts:
		return OutcomeDeadLetter
	}
	return OutcomeRetry
}
