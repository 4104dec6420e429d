package membroker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/conformance"
)

func TestConformance(t *testing.T) {
	// One Broker per test case, so that cases cannot see each other's messages.
	brokers := map[*testing.T]*membroker.Broker{}
	get := func(t *testing.T) *membroker.Broker {
		if b := brokers[t]; b != nil {
			return b
		}
		b, err := membroker.New(&membroker.Options{MaxMessageSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		brokers[t] = b
		return b
	}
	conformance.Run(t, conformance.Harness{
		Capabilities:   broker.Capabilities{FanOut: true, OrderedByKey: true},
		MaxMessageSize: 64 << 10,
		NewPublisher: func(t *testing.T) (broker.Publisher, error) {
			return get(t).NewPublisher(), nil
		},
		NewConsumer: func(t *testing.T, o broker.ConsumerOptions) (broker.Consumer, error) {
			return get(t).NewConsumer(&o)
		},
	})
}

// One BROKER_URL serves a service's publisher and its consumers: a publisher
// checks the consumer parameters and ignores them.
func TestOneURLOpensPublisherAndConsumer(t *testing.T) {
	ctx := context.Background()
	url := "mem://one-url?group=billing&concurrency=4&max_attempts=3"
	p, err := broker.OpenPublisher(ctx, url)
	if err != nil {
		t.Fatalf("OpenPublisher(%s) = %v", url, err)
	}
	defer p.Close()
	c, err := broker.OpenConsumer(ctx, url)
	if err != nil {
		t.Fatalf("OpenConsumer(%s) = %v", url, err)
	}
	defer c.Close()
	if _, err := broker.OpenPublisher(ctx, "mem://one-url?max_attempts=many"); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("publisher with max_attempts=many: %v, want ErrInvalidArgument", err)
	}
	_, err = broker.OpenPublisher(ctx, "mem://?groop=x")
	if err == nil || !strings.Contains(err.Error(), `"mem://?groop=x"`) {
		t.Errorf("error for an unknown parameter = %v, want the URL as written", err)
	}
}
