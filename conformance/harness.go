// Package conformance is the test suite every brokerkit adapter passes: one
// meaning for every contract on every broker. Adapter authors call Run from a
// test with a Harness that opens publishers and consumers on a real broker:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Harness{
//			Capabilities: broker.Capabilities{FanOut: true, OrderedByKey: true},
//			NewPublisher: func(t *testing.T) (broker.Publisher, error) { ... },
//			NewConsumer:  func(t *testing.T, o broker.ConsumerOptions) (broker.Consumer, error) { ... },
//		})
//	}
//
// Each case is a named subtest, so one failing case names the broken promise.
// Cases for capabilities the harness does not declare are skipped with a
// message saying so; every other case runs. The suite uses only the standard
// testing package.
package conformance

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

// Harness connects the suite to one adapter on one broker.
type Harness struct {
	// Capabilities the adapter declares; cases that need one it lacks are
	// skipped, naming the capability.
	Capabilities broker.Capabilities
	// NewPublisher opens a publisher. The suite closes it.
	NewPublisher func(t *testing.T) (broker.Publisher, error)
	// NewConsumer opens a consumer with the given options. The suite closes
	// it. Options the adapter cannot serve may fail here or in Consume.
	NewConsumer func(t *testing.T, opts broker.ConsumerOptions) (broker.Consumer, error)
	// NewTopic returns a topic name used by no other test, with its
	// dead-letter topic "<name>.dlq", creating both on the broker if the
	// adapter does not create topics itself. Nil means a random name of
	// lower-case letters, digits and dashes.
	NewTopic func(t *testing.T) string
	// MaxMessageSize is the adapter's limit on broker.Message.Size; the suite
	// checks that one byte more is refused. Zero skips that case.
	MaxMessageSize int
	// DeduplicatesByID: the broker drops a second publish of the same ID
	// within a window (SQS FIFO queues do, by MessageDeduplicationId).
	DeduplicatesByID bool
	// Timeout bounds each wait for an event. Zero means 30 seconds.
	Timeout time.Duration
}

func (h Harness) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 30 * time.Second
}

func (h Harness) topic(t *testing.T) string {
	if h.NewTopic != nil {
		return h.NewTopic(t)
	}
	return RandomName("conf")
}

// RandomName returns prefix followed by a dash and 12 random hex digits, a
// name valid as a topic, queue or group on every supported broker.
func RandomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}
