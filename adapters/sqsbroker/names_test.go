package sqsbroker

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/brokerkit/broker"
)

func TestQueueName(t *testing.T) {
	for _, tc := range []struct {
		topic, name string
		fifo        bool
	}{
		{"orders", "orders", false},
		{"orders.dlq", "orders-dlq", false},
		{"orders.dlq.dlq", "orders-dlq-dlq", false},
		{"orders.fifo", "orders.fifo", true},
		{"orders.fifo.dlq", "orders-dlq.fifo", true},
		{"orders.fifo.dlq.dlq", "orders-dlq-dlq.fifo", true},
		{"billing.events.v2", "billing-events-v2", false},
		{"billing.events.fifo", "billing-events.fifo", true},
		{"a_b-C9", "a_b-C9", false},
		{"https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo.dlq", "orders-dlq.fifo", true},
		{strings.Repeat("x", 75) + ".fifo", strings.Repeat("x", 75) + ".fifo", true},
	} {
		name, fifo, err := QueueName(tc.topic)
		if err != nil || name != tc.name || fifo != tc.fifo {
			t.Errorf("QueueName(%q) = %q, %v, %v; want %q, %v", tc.topic, name, fifo, err, tc.name, tc.fifo)
		}
	}
	for _, topic := range []string{"", "a:b", "a/b", "ünï", ".fifo", strings.Repeat("x", 81), strings.Repeat("x", 76) + ".fifo"} {
		if _, _, err := QueueName(topic); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("QueueName(%q) = %v, want ErrInvalidArgument", topic, err)
		}
	}
}

func TestQueueURLFor(t *testing.T) {
	topic := "https://sqs.eu-west-1.amazonaws.com/123/orders.dlq"
	name, _, _ := QueueName(topic)
	if got, want := queueURLFor(topic, name), "https://sqs.eu-west-1.amazonaws.com/123/orders-dlq"; got != want {
		t.Errorf("queueURLFor = %q, want %q", got, want)
	}
}

func TestFIFOID(t *testing.T) {
	if got := fifoID("01J9ZQ-key.7"); got != "01J9ZQ-key.7" {
		t.Errorf("fifoID kept a valid ID as %q", got)
	}
	for _, s := range []string{"has space", "ünï", strings.Repeat("k", 129), ""} {
		got := fifoID(s)
		if !strings.HasPrefix(got, "sha256-") || len(got) != 71 || got != fifoID(s) {
			t.Errorf("fifoID(%q) = %q, want a stable sha256- hash", s, got)
		}
	}
	if fifoID("a b") == fifoID("a  b") {
		t.Error("different keys hash alike")
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
