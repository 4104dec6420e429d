package brokerotel

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/brokerkit/broker"
)

// Consumer-side metric names. Every one carries messaging.system,
// messaging.destination.name (the topic) and messaging.consumer.group.name;
// those marked so also carry OutcomeKey.
const (
	// MetricProcessDuration is the handler's duration in seconds, with outcome.
	MetricProcessDuration = "messaging.process.duration"
	// MetricHandled counts handler calls, with outcome: a message redelivered
	// three times counts three.
	MetricHandled = "brokerkit.consumer.handled"
	// MetricFailed counts handler calls that returned an error or panicked, other
	// than during shutdown, with outcome (retry or dead_letter).
	MetricFailed = "brokerkit.consumer.failed"
	// MetricRetried counts deliveries with Attempt > 1, when they start.
	MetricRetried = "brokerkit.consumer.retried"
	// MetricDeadLettered counts failures inferred to dead-letter the message.
	MetricDeadLettered = "brokerkit.consumer.dead_lettered"
	// MetricInFlight is the number of handler calls running.
	MetricInFlight = "brokerkit.consumer.in_flight"
)

// outcomes indexes the per-topic attribute sets.
var outcomes = [...]string{OutcomeOK, OutcomeRetry, OutcomeDeadLetter, OutcomeCancelled}

func outcomeIndex(o string) int {
	for i, s := range outcomes {
		if s == o {
			return i
		}
	}
	return 0
}

// Metrics returns middleware that measures each handler call on the
// OpenTelemetry metrics API: the MetricProcessDuration histogram, the
// MetricHandled, MetricFailed, MetricRetried and MetricDeadLettered counters and
// the MetricInFlight up-down counter.
//
// The outcome is inferred from the handler's result the way the consumer
// engine decides, since the engine reports nothing to middleware:
//
//   - nil: OutcomeOK (acknowledged);
//   - an error or a panic while the handler's context is cancelled:
//     OutcomeCancelled (the consumer is shutting down and hands the message
//     back; not counted as failed);
//   - otherwise an error or a panic with broker.IsPermanent(err), or with
//     m.Attempt >= the WithMaxAttempts value (default 5): OutcomeDeadLetter,
//     counted by MetricFailed and MetricDeadLettered;
//   - any other error or panic: OutcomeRetry, counted by MetricFailed.
//
// MetricDeadLettered therefore counts the decision to dead-letter, not the
// dead-letter publish: if that publish fails, the consumer redelivers the
// message and a later failure counts again. The dead-letter topic's depth is
// reported exactly by ObserveStats. The inference is right only when the
// options match the consumer's (WithConsumerOptions does that) and when no
// middleware between Metrics and the consumer changes the handler's error or
// context: put Tracing and Metrics first in broker.Chain.
func Metrics(opts ...Option) broker.Middleware {
	c := newConfig(opts)
	m := c.meter()
	ins := &consumerMetrics{cfg: c,
		duration:     durationHistogram(m, MetricProcessDuration, "Duration of handler calls."),
		handled:      messageCounter(m, MetricHandled, "Handler calls, by outcome."),
		failed:       messageCounter(m, MetricFailed, "Handler calls that failed, other than at shutdown."),
		retried:      messageCounter(m, MetricRetried, "Deliveries after the first of a message."),
		deadLettered: messageCounter(m, MetricDeadLettered, "Handler failures that send the message to the dead-letter topic."),
	}
	var err error
	ins.inFlight, err = m.Int64UpDownCounter(MetricInFlight, metric.WithUnit("{message}"),
		metric.WithDescription("Handler calls running."))
	handle(err)
	return ins.middleware
}

type consumerMetrics struct {
	cfg          config
	duration     metric.Float64Histogram
	handled      metric.Int64Counter
	failed       metric.Int64Counter
	retried      metric.Int64Counter
	deadLettered metric.Int64Counter
	inFlight     metric.Int64UpDownCounter
	topics       sync.Map // topic -> *consumerAttrs
}

// consumerAttrs are the metric options for one topic, built once so that a
// handler call allocates nothing for them.
type consumerAttrs struct {
	add        []metric.AddOption
	byOutcome  [len(outcomes)][]metric.AddOption
	recOutcome [len(outcomes)][]metric.RecordOption
}

func (c *consumerMetrics) attrs(topic string) *consumerAttrs {
	if a, ok := c.topics.Load(topic); ok {
		return a.(*consumerAttrs)
	}
	base := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(c.cfg.system),
		semconv.MessagingDestinationName(topic),
		semconv.MessagingConsumerGroupName(c.cfg.group),
	}
	a := &consumerAttrs{add: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(base...))}}
	for i, o := range outcomes {
		set := metric.WithAttributeSet(attribute.NewSet(append(base[:len(base):len(base)], OutcomeKey.String(o))...))
		a.byOutcome[i] = []metric.AddOption{set}
		a.recOutcome[i] = []metric.RecordOption{set}
	}
	v, _ := c.topics.LoadOrStore(topic, a)
	return v.(*consumerAttrs)
}

// enabled reports whether any instrument would record, which is never the
// case under the no-op meter provider.
func (c *consumerMetrics) enabled(ctx context.Context) bool {
	return c.handled.Enabled(ctx) || c.duration.Enabled(ctx) || c.inFlight.Enabled(ctx) ||
		c.failed.Enabled(ctx) || c.retried.Enabled(ctx) || c.deadLettered.Enabled(ctx)
}

func (c *consumerMetrics) middleware(next broker.Handler) broker.Handler {
	return func(ctx context.Context, m *broker.Message) error {
		if !c.enabled(ctx) {
			return next(ctx, m)
		}
		a := c.attrs(m.Topic)
		c.inFlight.Add(ctx, 1, a.add...)
		if m.Attempt > 1 {
			c.retried.Add(ctx, 1, a.add...)
		}
		start := time.Now()
		returned := false
		var err error
		defer func() {
			c.inFlight.Add(ctx, -1, a.add...)
			o := outcomeIndex(outcomeOf(ctx, m, err, !returned, c.cfg.maxAttempts))
			c.duration.Record(ctx, time.Since(start).Seconds(), a.recOutcome[o]...)
			c.handled.Add(ctx, 1, a.byOutcome[o]...)
			switch outcomes[o] {
			case OutcomeRetry:
				c.failed.Add(ctx, 1, a.byOutcome[o]...)
			case OutcomeDeadLetter:
				c.failed.Add(ctx, 1, a.byOutcome[o]...)
				c.deadLettered.Add(ctx, 1, a.add...)
			}
		}()
		err = next(ctx, m)
		returned = true
		return err
	}
}
