package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// cleanupTimeout bounds the removal of what a run left on a broker.
const cleanupTimeout = 10 * time.Second

// realBroker is a broker the scenario runs on, configured as an operator
// would: by BROKER_URL alone.
type realBroker struct {
	name string
	// url returns the BROKER_URL for a run on topic and removes, when the test
	// ends, what the run leaves on the broker. It skips the test when the
	// broker is not available (and fails it with CI=true).
	url func(t *testing.T, topic string) string
}

// Per-key order is on wherever the adapter declares OrderedByKey for the
// queues the URL gives (RabbitMQ and Kafka). SQS declares it for FIFO queues
// only, which also drop a second publish of an event ID within 5 minutes, a
// copy the demo waits to see handled: the SQS run uses a standard queue
// without per-key order. SQS has no FanOut either, so both consumers use the
// default group.
var realBrokers = []realBroker{
	{name: "RabbitMQ", url: func(t *testing.T, topic string) string {
		uri := testenv.AMQPURL(t)
		deleteRabbitAfter(t, uri, topic)
		return uri
	}},
	{name: "Kafka", url: func(t *testing.T, topic string) string {
		brokers := testenv.KafkaBrokers(t)
		deleteKafkaAfter(t, brokers, topic)
		u := url.URL{Scheme: "kafka", Host: strings.Join(brokers, ","), RawQuery: "create_topics=true&partitions=3"}
		return u.String()
	}},
	{name: "SQS", url: func(t *testing.T, topic string) string {
		endpoint := testenv.SQSEndpoint(t)
		// Credentials come from the AWS default chain; ElasticMQ accepts any.
		t.Setenv("AWS_ACCESS_KEY_ID", "brokerkit")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "brokerkit")
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		deleteSQSAfter(t, endpoint, topic)
		q := url.Values{"region": {"us-east-1"}, "endpoint": {endpoint}, "create_queues": {"true"},
			"group": {broker.DefaultGroup}, "order_by_key": {"false"}}
		return "sqs://?" + q.Encode()
	}},
}

// The scenario on each real broker, on a fresh topic: no order lost, none
// emailed twice, every poison event parked with its reason; the metrics
// count what the run counted, and each handler call continues the trace of
// its event's publish, whose context crossed the broker in the headers.
func TestScenarioOnBrokers(t *testing.T) {
	for _, b := range realBrokers {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig("unused")
			cfg.Topic = conformance.RandomName("orders") + ".confirmed"
			cfg.URL = b.url(t, cfg.Topic)
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

// deleteRabbitAfter deletes, when the test ends, the exchanges of topic and
// its dead-letter topic and the quorum queues of the groups the run used:
// each quorum queue holds file handles on the shared node.
func deleteRabbitAfter(t *testing.T, uri, topic string) {
	t.Cleanup(func() {
		conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(cleanupTimeout)})
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		for _, q := range []string{topic + "." + broker.DefaultGroup, topic + "." + notificationGroup,
			topic + ".dlq." + broker.DefaultGroup, topic + ".dlq." + auditGroup} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Logf("cleanup: queue %s: %v", q, err)
				return // the channel is closed
			}
		}
		for _, x := range []string{topic, topic + ".dlq"} {
			_ = ch.ExchangeDelete(x, false, false)
		}
	})
}

// deleteKafkaAfter deletes, when the test ends, topic, its dead-letter topic
// and the consumer groups the run used.
func deleteKafkaAfter(t *testing.T, brokers []string, topic string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
		groups := []string{notificationGroup + "/" + topic, auditGroup + "/" + topic + ".dlq"}
		_, _ = c.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: groups})
		_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic, topic + ".dlq", topic + ".dlq.dlq"}})
	})
}

// deleteSQSAfter deletes, when the test ends, the queues of topic, of its
// dead-letter topic, and the dead-letter queue created for that.
func deleteSQSAfter(t *testing.T, endpoint, topic string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		c := sqs.NewFromConfig(aws.Config{
			Region:      "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider("brokerkit", "brokerkit", ""),
		}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
		for _, tp := range []string{topic, topic + ".dlq", topic + ".dlq.dlq"} {
			name, _, err := sqsbroker.QueueName(tp)
			if err != nil {
				continue
			}
			if out, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)}); err == nil {
				_, _ = c.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
			}
		}
	})
}
