package brokerotel_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/brokerotel"
)

// A known run on the mem broker: 10 messages, m1-m3 fail once, m4 fails
// permanently, m5 fails on every one of its 3 attempts.
func TestMetricsKnownRun(t *testing.T) {
	mp, reader := newMeter(t)
	b := newMem(t, nil)
	copts := broker.ConsumerOptions{Group: "billing", MaxAttempts: 3, Backoff: fast, Concurrency: 2}
	opts := []brokerotel.Option{brokerotel.WithMeterProvider(mp), noTracer, brokerotel.WithSystem("mem"), brokerotel.WithConsumerOptions(copts)}

	h := func(ctx context.Context, m *broker.Message) error {
		switch m.ID {
		case "m1", "m2", "m3":
			if m.Attempt == 1 {
				return errors.New("transient")
			}
		case "m4":
			return broker.Permanent(errors.New("undecodable"))
		case "m5":
			return errors.New("always")
		}
		return nil
	}
	c := consume(t, b, &copts, "orders", broker.Chain(h, brokerotel.Metrics(opts...)))
	msgs := make([]*broker.Message, 10)
	for i := range msgs {
		msgs[i] = &broker.Message{ID: fmt.Sprintf("m%d", i)}
	}
	if err := b.NewPublisher().Publish(context.Background(), "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "15 handler calls and 2 dead letters", func() bool {
		st, err := c.Stats(context.Background(), "orders", "")
		return err == nil && st.DeadLetters == 2 && st.Depth == 0 && st.InFlight == 0 &&
			sum(collect(t, reader), brokerotel.MetricHandled) == 15
	})

	rm := collect(t, reader)
	base := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("mem"),
		semconv.MessagingDestinationName("orders"),
		semconv.MessagingConsumerGroupName("billing"),
	}
	outcome := func(o string) []attribute.KeyValue { return append(base[:3:3], brokerotel.OutcomeKey.String(o)) }
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"handled", sum(rm, brokerotel.MetricHandled, base...), 15},
		{"handled ok", sum(rm, brokerotel.MetricHandled, outcome(brokerotel.OutcomeOK)...), 8},
		{"handled retry", sum(rm, brokerotel.MetricHandled, outcome(brokerotel.OutcomeRetry)...), 5},
		{"handled dead_letter", sum(rm, brokerotel.MetricHandled, outcome(brokerotel.OutcomeDeadLetter)...), 2},
		{"failed", sum(rm, brokerotel.MetricFailed, base...), 7},
		{"retried", sum(rm, brokerotel.MetricRetried, base...), 5},
		{"dead-lettered", sum(rm, brokerotel.MetricDeadLettered, base...), 2},
		{"in flight", sum(rm, brokerotel.MetricInFlight, base...), 0},
		{"duration count", int64(histCount(rm, brokerotel.MetricProcessDuration, base...)), 15},
		{"duration count ok", int64(histCount(rm, brokerotel.MetricProcessDuration, outcome(brokerotel.OutcomeOK)...)), 8},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if m, ok := find(rm, brokerotel.MetricProcessDuration); !ok || m.Unit != "s" {
		t.Errorf("duration unit = %q, want s", m.Unit)
	}
}

func TestMetricsInFlightAndCancelled(t *testing.T) {
	mp, reader := newMeter(t)
	release := make(chan struct{})
	started := make(chan struct{})
	h := brokerotel.Metrics(brokerotel.WithMeterProvider(mp))(func(ctx context.Context, m *broker.Message) error {
		close(started)
		<-release
		return ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h(ctx, &broker.Message{Topic: "t", Attempt: 5}) }()
	<-started
	if n := sum(collect(t, reader), brokerotel.MetricInFlight); n != 1 {
		t.Errorf("in flight while the handler runs = %d, want 1", n)
	}
	cancel()
	close(release)
	<-done
	rm := collect(t, reader)
	if n := sum(rm, brokerotel.MetricHandled, brokerotel.OutcomeKey.String(brokerotel.OutcomeCancelled)); n != 1 {
		t.Errorf("handled{cancelled} = %d, want 1", n)
	}
	if f, d := sum(rm, brokerotel.MetricFailed), sum(rm, brokerotel.MetricDeadLettered); f != 0 || d != 0 {
		t.Errorf("a failure at shutdown counted: failed %d, dead-lettered %d; want 0 (the message is handed back)", f, d)
	}
	if n := sum(rm, brokerotel.MetricInFlight); n != 0 {
		t.Errorf("in flight after = %d, want 0", n)
	}
}

// A panicking handler is counted as a failure and the panic goes on to the
// consumer, which recovers it.
func TestMetricsPanic(t *testing.T) {
	mp, reader := newMeter(t)
	h := brokerotel.Metrics(brokerotel.WithMeterProvider(mp), brokerotel.WithMaxAttempts(2))(
		func(context.Context, *broker.Message) error { panic("boom") })
	for attempt := 1; attempt <= 2; attempt++ {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("the panic did not reach the caller")
				}
			}()
			_ = h(context.Background(), &broker.Message{Topic: "t", Attempt: attempt})
		}()
	}
	rm := collect(t, reader)
	if f, d, i := sum(rm, brokerotel.MetricFailed), sum(rm, brokerotel.MetricDeadLettered), sum(rm, brokerotel.MetricInFlight); f != 2 || d != 1 || i != 0 {
		t.Errorf("after two panics: failed %d dead-lettered %d in flight %d; want 2 1 0", f, d, i)
	}
}
