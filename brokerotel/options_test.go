package brokerotel_test

import (
	"context"
	"errors"
	"testing"

	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/brokerotel"
)

// The options as seen on a process span after a failure on attempt 2.
func TestOptions(t *testing.T) {
	for _, c := range []struct {
		name                   string
		opts                   []brokerotel.Option
		system, group, outcome string
	}{
		{"defaults", nil, brokerotel.DefaultSystem, broker.DefaultGroup, brokerotel.OutcomeRetry},
		{"rabbit URL", []brokerotel.Option{brokerotel.WithURL("amqp://u:secret@host:5672/?group=billing&max_attempts=2")},
			"rabbitmq", "billing", brokerotel.OutcomeDeadLetter},
		{"kafka URL", []brokerotel.Option{brokerotel.WithURL("kafka://localhost:9092")}, "kafka", broker.DefaultGroup, brokerotel.OutcomeRetry},
		{"sqs URL", []brokerotel.Option{brokerotel.WithURL("sqs://queue")}, "aws_sqs", broker.DefaultGroup, brokerotel.OutcomeRetry},
		{"mem URL", []brokerotel.Option{brokerotel.WithURL("mem://")}, brokerotel.DefaultSystem, broker.DefaultGroup, brokerotel.OutcomeRetry},
		{"other URL", []brokerotel.Option{brokerotel.WithURL("nats://x")}, "nats", broker.DefaultGroup, brokerotel.OutcomeRetry},
		{"bad URL", []brokerotel.Option{brokerotel.WithURL("%%")}, brokerotel.DefaultSystem, broker.DefaultGroup, brokerotel.OutcomeRetry},
		{"consumer options", []brokerotel.Option{brokerotel.WithConsumerOptions(broker.ConsumerOptions{Group: "g", MaxAttempts: 2})},
			brokerotel.DefaultSystem, "g", brokerotel.OutcomeDeadLetter},
		{"explicit, later wins", []brokerotel.Option{brokerotel.WithURL("kafka://x?max_attempts=2"), brokerotel.WithSystem("s"),
			brokerotel.WithGroup("g2"), brokerotel.WithMaxAttempts(0), nil}, "s", "g2", brokerotel.OutcomeRetry},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp, rec := newTracer(t)
			h := brokerotel.Tracing(append(c.opts, brokerotel.WithTracerProvider(tp))...)(
				func(context.Context, *broker.Message) error { return errors.New("fail") })
			_ = h(context.Background(), &broker.Message{Topic: "t", Attempt: 2})
			s := spans(rec, "process t")[0]
			if got := attr(s, semconv.MessagingSystemKey).AsString(); got != c.system {
				t.Errorf("system = %q, want %q", got, c.system)
			}
			if got := attr(s, semconv.MessagingConsumerGroupNameKey).AsString(); got != c.group {
				t.Errorf("group = %q, want %q", got, c.group)
			}
			if got := attr(s, brokerotel.OutcomeKey).AsString(); got != c.outcome {
				t.Errorf("outcome = %q, want %q", got, c.outcome)
			}
		})
	}
}
