package main

import (
	"net/url"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/brokertest"
)

// realBroker is a broker the scenario runs on, configured as an operator
// would: by BROKER_URL alone.
type realBroker struct {
	brokertest.Target
	// query holds the URL parameters the scenario sets on this broker.
	query url.Values
}

// Per-key order is on wherever the adapter declares OrderedByKey for the
// queues the URL gives (RabbitMQ and Kafka). SQS declares it for FIFO queues
// only, which also drop a second publish of an event ID within 5 minutes, a
// copy the demo waits to see handled: the SQS run uses a standard queue
// without per-key order. SQS has no FanOut either, so both consumers use the
// default group.
var realBrokers = []realBroker{
	{Target: brokertest.RabbitMQ},
	{Target: brokertest.Kafka},
	{Target: brokertest.SQS, query: url.Values{"group": {broker.DefaultGroup}, "order_by_key": {"false"}}},
}

// brokerURL returns the BROKER_URL for a run on topic and removes, when the
// test ends, what the run leaves on the broker, the two consumers' groups
// included. It skips the test when the broker is not available (and fails it
// with CI=true).
func (b realBroker) brokerURL(t *testing.T, topic string) string {
	return b.URL(t, topic, &brokertest.Options{Query: b.query, Groups: []string{notificationGroup, auditGroup}})
}

// The scenario on each real broker, on a fresh topic: no order lost, none
// emailed twice, every poison event parked with its reason; the metrics
// count what the run counted, and each handler call continues the trace of
// its event's publish, whose context crossed the broker in the headers.
func TestScenarioOnBrokers(t *testing.T) {
	for _, b := range realBrokers {
		t.Run(b.Name, func(t *testing.T) {
			cfg := testConfig("unused")
			cfg.Topic = conformance.RandomName("orders") + ".confirmed"
			cfg.URL = b.brokerURL(t, cfg.Topic)
			cfg.Orders = 30
			cfg.Poison = 3
			cfg.Duplicates = 5

			spans := tracetest.NewSpanRecorder()
			tel, err := newTelemetry("", sdktrace.WithSpanProcessor(spans))
			if err != nil {
				t.Fatal(err)
			}
			defer tel.Close()
			cfg.Telemetry = tel

			res := runScenario(t, cfg)
			checkMetrics(t, res, res.metrics)
			checkTraces(t, spans.Ended(), cfg.Topic, res.calls.total())
		})
	}
}

// checkTraces checks that there is a process span per handler call, each the
// child of a send span of the order service's publisher.
func checkTraces(t *testing.T, spans []sdktrace.ReadOnlySpan, topic string, calls int64) {
	t.Helper()
	sends := map[trace.SpanID]trace.TraceID{}
	for _, s := range spans {
		if s.Name() == "send "+topic && s.SpanKind() == trace.SpanKindProducer {
			sends[s.SpanContext().SpanID()] = s.SpanContext().TraceID()
		}
	}
	var processed, orphans int64
	for _, s := range spans {
		if s.Name() != "process "+topic {
			continue
		}
		processed++
		if tid, ok := sends[s.Parent().SpanID()]; !ok || tid != s.SpanContext().TraceID() {
			orphans++
		}
	}
	if processed != calls {
		t.Errorf("%d process spans, want one per handler call (%d)", processed, calls)
	}
	if orphans > 0 {
		t.Errorf("%d of %d process spans are not children of a publish's send span", orphans, processed)
	}
}
