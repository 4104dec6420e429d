package sqsbroker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// name prefixes the adapter's errors and log lines.
const name = "sqs"

// SQS limits the options are checked against.
const (
	// DefaultMessageLimit is the SQS size limit the adapter assumes unless
	// told otherwise: 256 KiB, which every SQS queue accepts.
	DefaultMessageLimit = 256 << 10
	// MaxMessageLimit is the largest message SQS takes when a queue's
	// MaximumMessageSize is raised to it.
	MaxMessageLimit = 1 << 20

	maxVisibility = 12 * time.Hour
	maxWait       = 20 * time.Second
)

// Options configure a Broker. The zero value is valid; each zero field means
// the default documented on it.
type Options struct {
	// CreateQueues makes the adapter create a queue that does not exist, with
	// its dead-letter queue and a RedrivePolicy to it, the first time it is
	// used. When false, using a missing queue fails with an error wrapping
	// broker.ErrNotFound.
	CreateQueues bool
	// VisibilityTimeout is how long a message a consumer holds stays hidden
	// from other consumers. A receive hides messages for 5s (or this, if
	// shorter); the consumer extends that to VisibilityTimeout once a message
	// is held for half of it, and keeps extending while it is held. So it
	// bounds how soon the messages of a consumer that died come back. Whole
	// seconds, from 1s to 12h; zero means 30s.
	VisibilityTimeout time.Duration
	// WaitTime is how long one ReceiveMessage long-polls for messages. Whole
	// seconds, from 1s to 20s; zero means 20s.
	WaitTime time.Duration
	// Pollers is how many ReceiveMessage calls a subscription keeps in flight
	// at most (each asks for up to 10 messages, and together never for more
	// than the consumer can hold). Zero means one per 10 messages of the
	// consumer's prefetch window (2 x Concurrency), from 1 to 10.
	Pollers int
	// PublishConcurrency is how many SendMessageBatch calls one Publish makes
	// at once. Zero means 8.
	PublishConcurrency int
	// MaxMessageSize is the SQS limit on one encoded message (body plus
	// attribute names, types and values) and on the bytes of one batch. Zero
	// means DefaultMessageLimit; it cannot exceed MaxMessageLimit. A queue the
	// adapter creates gets it as its MaximumMessageSize. Publishers accept a
	// broker.Message.Size up to 1 KiB less (see Broker.MaxMessageSize).
	MaxMessageSize int
	// MaxReceiveCount is the maxReceiveCount of the RedrivePolicy on the
	// queues the adapter creates: after that many receives SQS itself moves a
	// message to the dead-letter queue. Zero means 20, or 2 x MaxAttempts for
	// a queue a consumer creates, whichever is larger. See the package
	// documentation for why it stays well above MaxAttempts.
	MaxReceiveCount int
}

func (o Options) withDefaults() Options {
	if o.VisibilityTimeout == 0 {
		o.VisibilityTimeout = 30 * time.Second
	}
	if o.WaitTime == 0 {
		o.WaitTime = maxWait
	}
	if o.PublishConcurrency == 0 {
		o.PublishConcurrency = 8
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMessageLimit
	}
	return o
}

func (o Options) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("sqs: Options."+format+": %w", append(args, broker.ErrInvalidArgument)...)
	}
	switch {
	case o.VisibilityTimeout < time.Second || o.VisibilityTimeout > maxVisibility || o.VisibilityTimeout%time.Second != 0:
		return bad("VisibilityTimeout %v: want whole seconds from 1s to 12h", o.VisibilityTimeout)
	case o.WaitTime < time.Second || o.WaitTime > maxWait || o.WaitTime%time.Second != 0:
		return bad("WaitTime %v: want whole seconds from 1s to 20s", o.WaitTime)
	case o.Pollers < 0:
		return bad("Pollers %d is negative", o.Pollers)
	case o.PublishConcurrency < 0:
		return bad("PublishConcurrency %d is negative", o.PublishConcurrency)
	case o.MaxMessageSize < 2*sizeReserve || o.MaxMessageSize > MaxMessageLimit:
		return bad("MaxMessageSize %d: want %d to %d bytes", o.MaxMessageSize, 2*sizeReserve, MaxMessageLimit)
	case o.MaxReceiveCount < 0 || o.MaxReceiveCount > 1000:
		return bad("MaxReceiveCount %d: want 1 to 1000 (0 for the default)", o.MaxReceiveCount)
	}
	return nil
}

// Broker connects publishers and consumers to SQS through one client. It
// caches queue URLs and is safe for concurrent use.
type Broker struct {
	api  api
	opts Options

	mu     sync.Mutex
	queues map[string]*queue // by topic
}

// New returns a Broker that uses client, which carries the region, the
// credentials (normally from the default AWS chain, config.LoadDefaultConfig)
// and, for local servers, the endpoint. Nil opts means the defaults.
func New(client *sqs.Client, opts *Options) (*Broker, error) {
	if client == nil {
		return nil, fmt.Errorf("sqs: New needs an *sqs.Client: %w", broker.ErrInvalidArgument)
	}
	return newBroker(client, opts)
}

func newBroker(c api, opts *Options) (*Broker, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Broker{api: c, opts: o, queues: map[string]*queue{}}, nil
}

// NewPublisher returns a Publisher into b's queues.
func (b *Broker) NewPublisher() *driver.Publisher {
	return driver.NewPublisher(name, &sender{b: b})
}

// NewConsumer returns a Consumer of b's queues with the given options (nil
// means defaults). Dead letters go to the dead-letter queue through b.
//
// SQS has no fan-out: a queue is one consumer group. A Group other than
// broker.DefaultGroup (or empty) fails here with broker.ErrUnsupported rather
// than quietly making two groups compete for the messages.
func (b *Broker) NewConsumer(opts *broker.ConsumerOptions) (*driver.Consumer, error) {
	var o broker.ConsumerOptions
	if opts != nil {
		o = *opts
	}
	if o.Group != "" && o.Group != broker.DefaultGroup {
		return nil, fmt.Errorf("sqs: consumer group %q: an SQS queue is a single group and cannot fan out to several; "+
			"use the default group, or one queue per group (SNS to SQS fan-out): %w", o.Group, broker.ErrUnsupported)
	}
	return driver.NewConsumer(name, &receiver{b: b}, &sender{b: b}, o)
}

// Stats reports topic's queue figures: Depth and Lag are the messages
// waiting (ApproximateNumberOfMessages plus ApproximateNumberOfMessagesDelayed),
// InFlight the ones received and not yet deleted, including those waiting out
// a retry delay (ApproximateNumberOfMessagesNotVisible), and DeadLetters all
// the messages in "<topic>.dlq" (-1 if it does not exist). Consumers is -1:
// SQS does not know it. Group must be "" or broker.DefaultGroup.
func (b *Broker) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	return b.stats(ctx, topic, group, broker.DeadLetterTopic(topic))
}

var _ broker.StatsReader = (*Broker)(nil)

// MaxMessageSize is the largest broker.Message.Size that b's publishers
// accept: Options.MaxMessageSize less 1 KiB kept for attribute names and types.
func (b *Broker) MaxMessageSize() int { return b.opts.MaxMessageSize - sizeReserve }
