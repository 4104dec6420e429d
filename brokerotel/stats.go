package brokerotel

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/brokerkit/broker"
)

// Broker-side gauge names, reported by ObserveStats from broker.Stats with
// messaging.system, messaging.destination.name and
// messaging.consumer.group.name.
const (
	// MetricDepth is Stats.Depth: messages waiting to be delivered to the group.
	MetricDepth = "brokerkit.queue.depth"
	// MetricQueueInFlight is Stats.InFlight: delivered and not yet acknowledged.
	MetricQueueInFlight = "brokerkit.queue.in_flight"
	// MetricLag is Stats.Lag: how far the group is behind the newest message.
	MetricLag = "brokerkit.queue.lag"
	// MetricConsumers is Stats.Consumers: consumers attached to the group.
	MetricConsumers = "brokerkit.queue.consumers"
	// MetricDeadLetters is Stats.DeadLetters: messages in the dead-letter topic.
	MetricDeadLetters = "brokerkit.queue.dead_letters"
	// MetricPartitionLag is the Lag of each of Stats.Partitions, with
	// messaging.destination.partition.id besides the target's attributes;
	// only brokers with partitioned topics (Kafka) report it.
	MetricPartitionLag = "brokerkit.queue.partition.lag"
)

// Target names a topic and consumer group whose broker.Stats ObserveStats
// reports.
type Target struct {
	// Topic is the topic to report.
	Topic string
	// Group is the consumer group; empty means the WithGroup option's group,
	// itself broker.DefaultGroup by default.
	Group string
}

// ObserveStats registers observable gauges (MetricDepth, MetricQueueInFlight,
// MetricLag, MetricConsumers, MetricDeadLetters, MetricPartitionLag) for each target on the
// configured meter. Each collection by the meter's reader calls sr.Stats once
// per target, in order, with the collection's context; nothing runs between
// collections, so a slow broker slows the scrape and nothing else. A figure of
// -1 (unknown to the broker) is not reported; a target whose Stats fails
// reports nothing that time, and the errors go to the reader, which passes them
// to the OpenTelemetry error handler.
//
// It returns an error wrapping broker.ErrInvalidArgument when sr is nil,
// targets is empty or a topic is invalid. unregister stops the reporting; it
// is safe to call more than once.
func ObserveStats(sr broker.StatsReader, targets []Target, opts ...Option) (unregister func() error, err error) {
	if sr == nil {
		return nil, fmt.Errorf("brokerotel: ObserveStats: nil StatsReader: %w", broker.ErrInvalidArgument)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("brokerotel: ObserveStats: no targets: %w", broker.ErrInvalidArgument)
	}
	c := newConfig(opts)
	type observed struct {
		Target
		attrs metric.ObserveOption
		base  []attribute.KeyValue // attrs' attributes, for the partitions' sets
	}
	obs := make([]observed, len(targets))
	for i, t := range targets {
		if err := broker.ValidateTopic(t.Topic); err != nil {
			return nil, fmt.Errorf("brokerotel: ObserveStats: %w", err)
		}
		if t.Group == "" {
			t.Group = c.group
		}
		base := []attribute.KeyValue{
			semconv.MessagingSystemKey.String(c.system),
			semconv.MessagingDestinationName(t.Topic),
			semconv.MessagingConsumerGroupName(t.Group),
		}
		obs[i] = observed{Target: t, attrs: metric.WithAttributeSet(attribute.NewSet(base...)), base: base}
	}

	m := c.meter()
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		handle(err)
		return g
	}
	depth := gauge(MetricDepth, "{message}", "Messages waiting to be delivered to the consumer group.")
	inFlight := gauge(MetricQueueInFlight, "{message}", "Messages delivered to the consumer group and not yet acknowledged.")
	lag := gauge(MetricLag, "{message}", "How far the consumer group is behind the newest message.")
	consumers := gauge(MetricConsumers, "{consumer}", "Consumers attached to the consumer group.")
	deadLetters := gauge(MetricDeadLetters, "{message}", "Messages in the dead-letter topic.")
	partitionLag := gauge(MetricPartitionLag, "{message}", "How far the consumer group is behind the newest message of a partition.")

	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		var errs []error
		for _, t := range obs {
			st, err := sr.Stats(ctx, t.Topic, t.Group)
			if err != nil {
				errs = append(errs, fmt.Errorf("brokerotel: stats of %q group %q: %w", t.Topic, t.Group, err))
				continue
			}
			for _, f := range []struct {
				g metric.Int64ObservableGauge
				v int64
			}{{depth, st.Depth}, {inFlight, st.InFlight}, {lag, st.Lag}, {consumers, st.Consumers}, {deadLetters, st.DeadLetters}} {
				if f.v >= 0 {
					o.ObserveInt64(f.g, f.v, t.attrs)
				}
			}
			for _, p := range st.Partitions {
				attrs := append(t.base[:len(t.base):len(t.base)], semconv.MessagingDestinationPartitionID(strconv.Itoa(p.Partition)))
				o.ObserveInt64(partitionLag, p.Lag, metric.WithAttributeSet(attribute.NewSet(attrs...)))
			}
		}
		return errors.Join(errs...)
	}, depth, inFlight, lag, consumers, deadLetters, partitionLag)
	if err != nil {
		return nil, fmt.Errorf("brokerotel: ObserveStats: %w", err)
	}
	return reg.Unregister, nil
}
