package kafkabroker

import (
	"context"
	"fmt"
	"slices"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// name prefixes the errors of the portable publisher and consumer.
const name = "kafka"

// Broker is a handle to one Kafka cluster with one set of Options. The
// publishers and consumers it opens share its connections and metadata
// cache. It holds no resources of its own: those belong to the publishers and
// consumers, and go with the last of them to close. It is safe for concurrent
// use.
type Broker struct {
	a *admin
}

// New returns a Broker for the Kafka cluster reachable at brokers
// ("host:port" bootstrap addresses) with opts (nil means defaults). Options
// are validated here; nothing connects until first use, so a cluster that is
// down shows as errors wrapping broker.ErrUnavailable later, not here.
func New(brokers []string, opts *Options) (*Broker, error) {
	o, err := prepare(brokers, opts)
	if err != nil {
		return nil, err
	}
	return &Broker{a: newAdmin(slices.Clone(brokers), o)}, nil
}

// NewPublisher returns a Publisher into the cluster.
func (b *Broker) NewPublisher() *driver.Publisher {
	return driver.NewPublisher(name, newSender(b.a))
}

// NewConsumer returns a Consumer of the cluster with the given options (nil
// means defaults). Dead letters are published to the same cluster.
func (b *Broker) NewConsumer(opts *broker.ConsumerOptions) (*driver.Consumer, error) {
	var co broker.ConsumerOptions
	if opts != nil {
		co = *opts
	}
	r := &receiver{a: b.a.retain(), subs: map[*subscription]struct{}{}}
	dead := newSender(b.a)
	c, err := driver.NewConsumer(name, r, dead, co)
	if err != nil {
		_ = dead.Close()
		_ = r.Close()
		return nil, err
	}
	r.opts = c.Options()
	return c, nil
}

// MaxMessageSize is the largest broker.Message.Size a publisher accepts:
// Options.MaxMessageSize less the record-batch framing, with room for up to
// 32 headers of under 64 bytes each. Publish also checks each message's exact
// encoded size before sending, so a message with more or longer headers can
// be refused with broker.ErrMessageTooLarge a little below it.
func (b *Broker) MaxMessageSize() int {
	return (&sender{limit: b.a.opts.MaxMessageSize}).MaxMessageSize()
}

// CreateTopic creates topic and its dead-letter topic "<topic>.dlq" with
// partitions partitions (zero means Options.Partitions, else the broker's
// num.partitions) and Options.ReplicationFactor, whatever
// Options.CreateTopics says, and returns once every partition of both answers
// from its leader. Topics that exist already are left as they are.
func (b *Broker) CreateTopic(ctx context.Context, topic string, partitions int) error {
	if err := validateTopic(topic); err != nil {
		return err
	}
	if partitions < 0 {
		return fmt.Errorf("kafka: create topic %q: %d partitions: %w", topic, partitions, broker.ErrInvalidArgument)
	}
	return b.a.createAndWait(ctx, partitions, topic, broker.DeadLetterTopic(topic))
}

func prepare(brokers []string, opts *Options) (Options, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := validate(brokers, o); err != nil {
		return Options{}, err
	}
	return o.withDefaults(), nil
}

// validateTopic refuses names Kafka does not take: up to 249 characters of
// ASCII letters, digits, '.', '_' and '-', and neither "." nor "..".
func validateTopic(topic string) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	bad := len(topic) > 249 || topic == "." || topic == ".."
	for i := 0; i < len(topic) && !bad; i++ {
		c := topic[i]
		bad = !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')
	}
	if bad {
		return fmt.Errorf("kafka: topic %q: want 1 to 249 ASCII letters, digits, '.', '_' or '-': %w", topic, broker.ErrInvalidArgument)
	}
	return nil
}
