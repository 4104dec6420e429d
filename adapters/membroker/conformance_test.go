package membroker_test

import (
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
