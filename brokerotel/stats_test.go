package brokerotel_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/brokerotel"
)

func TestObserveStatsMatchesMem(t *testing.T) {
	mp, reader := newMeter(t)
	b := newMem(t, nil)
	ctx := context.Background()
	copts := broker.ConsumerOptions{Group: "billing", MaxAttempts: 1}
	c := consume(t, b, &copts, "orders", func(context.Context, *broker.Message) error { return errors.New("no") })
	pub := b.NewPublisher()
	if err := pub.Publish(ctx, "orders", &broker.Message{}, &broker.Message{}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "backlog", &broker.Message{}, &broker.Message{}, &broker.Message{}, &broker.Message{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "2 dead letters", func() bool {
		st, err := c.Stats(ctx, "orders", "")
		return err == nil && st.DeadLetters == 2 && st.InFlight == 0
	})

	unregister, err := brokerotel.ObserveStats(c, []brokerotel.Target{
		{Topic: "orders"}, // the WithConsumerOptions group
		{Topic: "backlog", Group: broker.DefaultGroup},
	}, brokerotel.WithMeterProvider(mp), brokerotel.WithConsumerOptions(copts))
	if err != nil {
		t.Fatal(err)
	}
	rm := collect(t, reader)
	for _, target := range []struct{ topic, group string }{{"orders", "billing"}, {"backlog", broker.DefaultGroup}} {
		want, err := c.Stats(ctx, target.topic, target.group)
		if err != nil {
			t.Fatal(err)
		}
		attrs := []attribute.KeyValue{
			semconv.MessagingDestinationName(target.topic),
			semconv.MessagingConsumerGroupName(target.group),
			semconv.MessagingSystemKey.String(brokerotel.DefaultSystem),
		}
		for name, w := range map[string]int64{
			brokerotel.MetricDepth:         want.Depth,
			brokerotel.MetricQueueInFlight: want.InFlight,
			brokerotel.MetricLag:           want.Lag,
			brokerotel.MetricConsumers:     want.Consumers,
			brokerotel.MetricDeadLetters:   want.DeadLetters,
		} {
			if got, ok := gauge(rm, name, attrs...); !ok || got != w {
				t.Errorf("%s %s/%s = %d (reported %v), want %d as mem Stats", name, target.topic, target.group, got, ok, w)
			}
		}
	}
	if got, _ := gauge(rm, brokerotel.MetricDepth, semconv.MessagingDestinationName("backlog")); got != 4 {
		t.Errorf("backlog depth = %d, want 4", got)
	}
	if got, _ := gauge(rm, brokerotel.MetricDeadLetters, semconv.MessagingDestinationName("orders")); got != 2 {
		t.Errorf("orders dead letters = %d, want 2", got)
	}

	if err := unregister(); err != nil {
		t.Fatal(err)
	}
	if err := unregister(); err != nil {
		t.Errorf("second unregister: %v", err)
	}
	if _, ok := gauge(collect(t, reader), brokerotel.MetricDepth); ok {
		t.Error("depth still reported after unregister")
	}
}

// statsFunc is a broker.StatsReader from a function.
type statsFunc func(topic, group string) (broker.Stats, error)

func (f statsFunc) Stats(_ context.Context, topic, group string) (broker.Stats, error) {
	return f(topic, group)
}

func TestObserveStatsUnknownAndErrors(t *testing.T) {
	mp, reader := newMeter(t)
	var groups []string
	sr := statsFunc(func(topic, group string) (broker.Stats, error) {
		groups = append(groups, group)
		if topic == "down" {
			return broker.Stats{}, broker.ErrUnavailable
		}
		return broker.Stats{Depth: 7, InFlight: -1, Lag: -1, Consumers: 2, DeadLetters: -1}, nil
	})
	_, err := brokerotel.ObserveStats(sr, []brokerotel.Target{{Topic: "up"}, {Topic: "down"}}, brokerotel.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	rm := collectAllowingErrors(t, reader, broker.ErrUnavailable)
	if got, ok := gauge(rm, brokerotel.MetricDepth, semconv.MessagingDestinationName("up")); !ok || got != 7 {
		t.Errorf("depth = %d (%v), want 7", got, ok)
	}
	for _, name := range []string{brokerotel.MetricLag, brokerotel.MetricQueueInFlight, brokerotel.MetricDeadLetters} {
		if got, ok := gauge(rm, name); ok {
			t.Errorf("%s reported %d, want nothing for -1", name, got)
		}
	}
	if _, ok := gauge(rm, brokerotel.MetricDepth, semconv.MessagingDestinationName("down")); ok {
		t.Error("a target whose Stats failed reported depth")
	}
	if len(groups) != 2 || groups[0] != broker.DefaultGroup {
		t.Errorf("Stats called with groups %q, want the default group for each target", groups)
	}
}

// Each of Stats.Partitions is a point of MetricPartitionLag, told apart by
// messaging.destination.partition.id; a broker without partitions reports
// none.
func TestObserveStatsPartitionLag(t *testing.T) {
	mp, reader := newMeter(t)
	sr := statsFunc(func(topic, group string) (broker.Stats, error) {
		st := broker.Stats{Depth: 5, InFlight: 0, Lag: 5, Consumers: 1, DeadLetters: 0}
		if topic == "log" {
			st.Partitions = []broker.PartitionLag{{Partition: 0, Committed: 2, End: 2}, {Partition: 1, Committed: 1, End: 6, Lag: 5}}
		}
		return st, nil
	})
	_, err := brokerotel.ObserveStats(sr, []brokerotel.Target{{Topic: "log"}, {Topic: "queue"}}, brokerotel.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	rm := collect(t, reader)
	for id, want := range map[string]int64{"0": 0, "1": 5} {
		got, ok := gauge(rm, brokerotel.MetricPartitionLag, semconv.MessagingDestinationName("log"), semconv.MessagingDestinationPartitionID(id))
		if !ok || got != want {
			t.Errorf("partition %s lag = %d (%v), want %d", id, got, ok, want)
		}
	}
	if _, ok := gauge(rm, brokerotel.MetricPartitionLag, semconv.MessagingDestinationName("queue")); ok {
		t.Error("partition lag reported for a target without partitions")
	}
	if got, ok := gauge(rm, brokerotel.MetricLag, semconv.MessagingDestinationName("log")); !ok || got != 5 {
		t.Errorf("lag = %d (%v), want 5", got, ok)
	}
}

func collectAllowingErrors(t *testing.T, r *sdkmetric.ManualReader, want error) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); !errors.Is(err, want) {
		t.Errorf("Collect error = %v, want one wrapping %v", err, want)
	}
	return rm
}

func TestObserveStatsInvalid(t *testing.T) {
	sr := statsFunc(func(string, string) (broker.Stats, error) { return broker.Stats{}, nil })
	for name, call := range map[string]func() error{
		"nil reader": func() error { _, err := brokerotel.ObserveStats(nil, []brokerotel.Target{{Topic: "t"}}); return err },
		"no targets": func() error { _, err := brokerotel.ObserveStats(sr, nil); return err },
		"bad topic":  func() error { _, err := brokerotel.ObserveStats(sr, []brokerotel.Target{{Topic: "a b"}}); return err },
	} {
		if err := call(); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
}
