// Package driver is for adapter authors. An adapter implements the small
// Sender and Receiver interfaces for its broker; NewPublisher and NewConsumer
// build the broker.Publisher and broker.Consumer that applications use on top
// of them. Everything that must mean the same on every broker is written once
// here: argument checks, ID assignment, the size check before the network,
// handler concurrency, per-key ordering, panic recovery, redelivery with
// backoff, dead-lettering after the last attempt, and draining on Close.
//
// Applications never import this package.
package driver

import (
	"context"
	"time"

	"github.com/brokerkit/broker"
)

// Sender is the publishing half of a broker adapter.
type Sender interface {
	// Send delivers msgs to topic and returns nil only once the broker has
	// durably accepted all of them. The messages already have IDs and passed the
	// topic and size checks. On a partial failure Send returns a
	// *broker.PublishError whose indices refer to msgs. Errors wrap the broker
	// sentinels (ErrNotFound, ErrUnavailable, ...). Send is called concurrently.
	Send(ctx context.Context, topic string, msgs []*broker.Message) error
	// MaxMessageSize is the largest broker.Message.Size the broker takes; zero
	// means no limit.
	MaxMessageSize() int
	// Close releases the sender's resources. No Send is running when it is called.
	Close() error
}

// Features is what a Receiver supports.
type Features struct {
	broker.Capabilities
	// NackRedelivers means Nack hands one message back to the broker, which
	// redelivers it after the delay without holding up other messages. When
	// false (Kafka: a partition is a log), the consumer retries a failed message
	// in process and calls Nack only when it shuts down.
	NackRedelivers bool
	// Buffered is how many messages the receiver already holds in memory
	// ahead of Receive, fetched in the background whatever the consumer does
	// (the Kafka adapter's fetchers). The consumer may then hold up to that many
	// deliveries instead of twice its concurrency without taking work from other
	// members, and hands them to its handlers with fewer goroutine switches.
	// Zero means the receiver fetches on demand: Prefetch is the broker-side
	// window, and the consumer keeps it small so competing consumers share.
	Buffered int
}

// Receiver is the consuming half of a broker adapter.
type Receiver interface {
	// Features reports what the receiver supports; it must not change.
	Features() Features
	// Subscribe attaches to topic as a member of cfg.Group. It fails with an
	// error wrapping broker.ErrUnsupported when the configuration cannot be
	// served, before any message is received.
	Subscribe(ctx context.Context, topic string, cfg SubscribeConfig) (Subscription, error)
	// Close releases the receiver's resources after every subscription closed.
	Close() error
}

// SubscribeConfig is what a subscription needs to know of the consumer.
type SubscribeConfig struct {
	// Options are the consumer's options, with defaults applied.
	Options broker.ConsumerOptions
	// Prefetch is the most deliveries the consumer holds unacknowledged at once;
	// a receiver may use it as its broker-side prefetch (QoS).
	Prefetch int
}

// Subscription receives one topic's messages for one group.
type Subscription interface {
	// Receive blocks until at least one message is available, and returns at
	// most max; the slice (not the deliveries) may be reused by the next call.
	// It returns ctx.Err() when ctx ends first. An error wrapping
	// broker.ErrUnavailable makes the consumer retry after a pause; any other
	// error stops Consume with that error.
	Receive(ctx context.Context, max int) ([]*Delivery, error)
	// Ack acknowledges a delivery whose handler succeeded. It may be batched, as
	// long as Close flushes it.
	Ack(ctx context.Context, d *Delivery) error
	// Nack returns a delivery to the broker for redelivery no sooner than delay.
	// See Features.NackRedelivers.
	Nack(ctx context.Context, d *Delivery, delay time.Duration) error
	// Close flushes pending acknowledgements and detaches; deliveries neither
	// acked nor nacked come back to the group later.
	Close() error
}

// Delivery is one received message and the adapter's handle to acknowledge it.
type Delivery struct {
	// Message has Topic, Attempt (from the broker when it counts deliveries,
	// else 1), PublishedAt and Native set by the adapter.
	Message *broker.Message
	// Handle is the adapter's own acknowledgement token; the consumer never
	// looks at it.
	Handle any
}

// StatsReader is implemented by receivers and senders that can report depth
// and lag; the portable consumer and publisher expose it as broker.StatsReader.
type StatsReader = broker.StatsReader
