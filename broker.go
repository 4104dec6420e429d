package broker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one unit of data moving through a broker.
//
// The first four fields are what a publisher sets. The rest are filled in by a
// consumer on receipt and ignored by Publish.
type Message struct {
	// ID identifies the message. Publish assigns a sortable unique ID when it is
	// empty. It is kept across redeliveries, so it is the natural idempotency key.
	ID string
	// Key is the ordering and partitioning key: the Kafka message key, the SQS FIFO
	// MessageGroupId, an AMQP header. Messages with the same Key are handled in
	// publish order when the consumer asks for ordering; empty means unordered.
	Key string
	// Body is the payload, any bytes, possibly empty.
	Body []byte
	// Headers are string metadata that travel with the message.
	Headers map[string]string

	// Topic is the topic the message was received from.
	Topic string
	// Attempt is 1 on the first delivery and grows by one on each redelivery.
	Attempt int
	// PublishedAt is when the broker accepted the message, as precisely as the
	// broker records it; zero when unknown.
	PublishedAt time.Time
	// Native is the adapter's representation of a received message: the
	// broker client's own message (amqp091.Delivery, sqs types.Message), or a
	// value of the adapter's with an As(target any) bool method that builds
	// the client's message on demand (kafkabroker, which would otherwise keep
	// a second copy of every message). It is nil for the in-memory adapter and
	// on published messages. Read it with As, which is typed and works for both.
	Native any
}

// As sets target, a non-nil pointer to the broker client's message type, to the
// native message this one was received as. It reports whether the types matched.
// Each adapter's package documentation lists the types it supports.
func (m *Message) As(target any) bool {
	if m == nil || m.Native == nil {
		return false
	}
	if n, ok := m.Native.(interface{ As(target any) bool }); ok {
		return n.As(target)
	}
	v := reflect.ValueOf(target)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	n := reflect.ValueOf(m.Native)
	if n.Type().AssignableTo(v.Elem().Type()) {
		v.Elem().Set(n)
		return true
	}
	// An adapter may keep a pointer to its native message (no copy per
	// message); a target of the pointed-to type gets a copy of it.
	if n.Kind() == reflect.Pointer && !n.IsNil() && n.Elem().Type().AssignableTo(v.Elem().Type()) {
		v.Elem().Set(n.Elem())
		return true
	}
	return false
}

// Clone returns a deep copy of the publishable part of m (ID, Key, Body,
// Headers), ready to publish elsewhere, for example to a dead-letter topic.
func (m *Message) Clone() *Message {
	c := &Message{ID: m.ID, Key: m.Key, Headers: maps.Clone(m.Headers)}
	if m.Body != nil {
		c.Body = append([]byte{}, m.Body...)
	}
	return c
}

// Size is the number of bytes the message occupies before any broker framing:
// key, body, and header names and values. Adapters compare it with their limit.
func (m *Message) Size() int {
	n := len(m.ID) + len(m.Key) + len(m.Body)
	for k, v := range m.Headers {
		n += len(k) + len(v)
	}
	return n
}

// Publisher sends messages to topics. Implementations are safe for concurrent use.
type Publisher interface {
	// Publish sends msgs to topic. It returns nil only when the broker has durably
	// accepted every message. On a partial failure it returns a *PublishError that
	// names the messages that were not accepted. Messages with an empty ID are
	// given one before sending, so the caller can read it afterwards.
	Publish(ctx context.Context, topic string, msgs ...*Message) error
	// Close waits for in-flight publishes and releases the connection. Publish
	// after Close returns ErrClosed.
	Close() error
}

// Handler processes one message. Returning nil acknowledges it. Returning an
// error asks for redelivery after a backoff delay, or dead-lettering once the
// attempts are used up; a Permanent error dead-letters it at once. The context
// is cancelled when the consumer shuts down before the handler finished.
type Handler func(ctx context.Context, m *Message) error

// Middleware wraps a Handler with behaviour such as retries or timeouts.
type Middleware func(Handler) Handler

// Chain wraps h with the middleware, the first being the outermost:
// Chain(h, a, b) runs a, then b, then h.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Consumer delivers the messages of a topic to a handler. Implementations are
// safe for concurrent use; one Consumer may consume several topics at once.
type Consumer interface {
	// Consume receives messages from topic for the consumer's group and calls h
	// for each, with the consumer's concurrency. It blocks until ctx ends, when it
	// returns ctx.Err(), or until Close, when it returns nil. It returns at once
	// with an error wrapping ErrInvalidArgument or ErrUnsupported when the topic
	// or the consumer's options cannot be served.
	Consume(ctx context.Context, topic string, h Handler) error
	// Close stops fetching, lets in-flight handlers finish (up to the consumer's
	// drain timeout), acknowledges what succeeded, and returns the rest to the
	// broker for redelivery.
	Close() error
}

// DefaultGroup is the consumer group used when ConsumerOptions.Group is empty.
// Messages published to a topic before any consumer ran are kept for this group.
const DefaultGroup = "default"

// ConsumerOptions are the per-consumer settings every adapter understands. The
// zero value is valid and means the defaults documented on each field. The same
// settings can be given in a URL query: group, concurrency, order_by_key,
// max_attempts, backoff_min, backoff_max, drain_timeout, dead_letter_topic.
type ConsumerOptions struct {
	// Group names the consumer group. Consumers in one group share the messages;
	// each group receives every message (where the adapter supports fan-out).
	// Empty means DefaultGroup.
	Group string
	// Concurrency is how many handlers run at once. Zero means 1.
	Concurrency int
	// OrderByKey handles messages with the same non-empty Key one at a time in
	// publish order, retrying a failed one in place before the next of its key.
	// Different keys still run in parallel. Consume fails with ErrUnsupported on
	// an adapter that cannot keep per-key order.
	OrderByKey bool
	// MaxAttempts is how many times a message is handled before it is moved to
	// the dead-letter topic. Zero means 5.
	MaxAttempts int
	// Backoff gives the delay before redelivery after a failed attempt. Nil means
	// ExponentialBackoff(100ms, 30s).
	Backoff Backoff
	// DeadLetterTopic is where exhausted and permanently failed messages go.
	// Empty means "<topic>.dlq".
	DeadLetterTopic string
	// DeadLetterIf decides whether a message that failed its last attempt, or
	// failed with a Permanent error, goes to the dead-letter topic. A message
	// it keeps is not dropped: it is redelivered after the backoff, attempt
	// after attempt, until it succeeds or DeadLetterIf lets it go. Use it for
	// failures that are no message's fault, such as a downstream outage. Nil
	// dead-letters every such message. (RabbitMQ's delivery_limit still
	// applies there: see the adapter.)
	DeadLetterIf func(m *Message, err error) bool
	// DrainTimeout bounds how long Close waits for in-flight handlers before
	// cancelling their context. Zero means 30s.
	DrainTimeout time.Duration
	// Logger receives what the consumer cannot return to a caller: failed
	// acknowledgements, failed dead-letter publishes, broker reconnects. Nil
	// means slog.Default().
	Logger *slog.Logger
}

// Capabilities are the optional behaviours an adapter supports. Asking a
// consumer for one its adapter lacks fails at start with ErrUnsupported.
type Capabilities struct {
	// FanOut: every consumer group receives every message of a topic.
	FanOut bool
	// OrderedByKey: messages with one Key can be handled in publish order.
	OrderedByKey bool
}

// CapabilitiesOf reports what c's adapter supports, and false when c does not
// say (a consumer wrapped by code that hides its methods). Every adapter in
// this module says. A capability that depends on the topic is reported as
// present, and Consume checks it for the topic: SQS keeps order by key on
// FIFO queues only.
func CapabilitiesOf(c Consumer) (Capabilities, bool) {
	if r, ok := c.(interface{ Capabilities() Capabilities }); ok {
		return r.Capabilities(), true
	}
	return Capabilities{}, false
}

// Stats are a topic's figures for one consumer group, as the broker reports
// them. A figure the broker cannot give is -1.
type Stats struct {
	// Depth is the number of messages waiting to be delivered to the group.
	Depth int64
	// InFlight is the number delivered and not yet acknowledged.
	InFlight int64
	// Lag is how far the group is behind the newest message, in messages; for
	// queue brokers it equals Depth.
	Lag int64
	// Consumers is the number of consumers attached to the group.
	Consumers int64
	// DeadLetters is the number of messages in the dead-letter topic.
	DeadLetters int64
	// Partitions is the lag of each partition, in partition order, for
	// brokers whose topics are partitioned logs (Kafka); Lag is their sum.
	// nil for queue brokers.
	Partitions []PartitionLag
}

// PartitionLag is a consumer group's position in one partition of a topic.
type PartitionLag struct {
	Partition int
	// Committed is where the group resumes: the offset after the last one
	// it committed, or where it would start when it never committed.
	Committed int64
	// End is the offset the next message published to the partition gets.
	End int64
	// Lag is End minus Committed (0 when Committed is past End): the
	// messages the group has yet to finish.
	Lag int64
}

// StatsReader is implemented by consumers (and some publishers) that can report
// queue depth and lag. Callers type-assert for it.
type StatsReader interface {
	// Stats reports the figures for topic and group. Group "" means the
	// consumer's own group when a Consumer is asked, DefaultGroup otherwise.
	Stats(ctx context.Context, topic, group string) (Stats, error)
}

// WithDefaults returns o with every zero field replaced by its documented default.
func (o ConsumerOptions) WithDefaults() ConsumerOptions {
	if o.Group == "" {
		o.Group = DefaultGroup
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 5
	}
	if o.Backoff == nil {
		o.Backoff = ExponentialBackoff(100*time.Millisecond, 30*time.Second)
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports options that can never work, wrapping ErrInvalidArgument.
func (o ConsumerOptions) Validate() error {
	switch {
	case o.Concurrency < 0:
		return fmt.Errorf("broker: ConsumerOptions.Concurrency %d is negative: %w", o.Concurrency, ErrInvalidArgument)
	case o.MaxAttempts < 0:
		return fmt.Errorf("broker: ConsumerOptions.MaxAttempts %d is negative: %w", o.MaxAttempts, ErrInvalidArgument)
	case o.DrainTimeout < 0:
		return fmt.Errorf("broker: ConsumerOptions.DrainTimeout %v is negative: %w", o.DrainTimeout, ErrInvalidArgument)
	case strings.ContainsAny(o.Group, " \t\r\n/"):
		return fmt.Errorf("broker: ConsumerOptions.Group %q contains white space or '/': %w", o.Group, ErrInvalidArgument)
	}
	return nil
}

// DeadLetterTopicFor returns the dead-letter topic for topic under o.
func (o ConsumerOptions) DeadLetterTopicFor(topic string) string {
	if o.DeadLetterTopic != "" {
		return o.DeadLetterTopic
	}
	return DeadLetterTopic(topic)
}

// DeadLetterSuffix ends the name of a default dead-letter topic.
const DeadLetterSuffix = ".dlq"

// DeadLetterTopic returns topic's default dead-letter topic, "<topic>.dlq".
func DeadLetterTopic(topic string) string { return topic + DeadLetterSuffix }

// IsDeadLetterTopic reports whether topic is named as a dead-letter topic.
// Adapters give such topics no dead-letter topic of their own.
func IsDeadLetterTopic(topic string) bool { return strings.HasSuffix(topic, DeadLetterSuffix) }

// ValidateTopic returns an error wrapping ErrInvalidArgument when topic is empty
// or contains white space or control characters. Adapters add their own limits.
func ValidateTopic(topic string) error {
	if topic == "" {
		return fmt.Errorf("broker: empty topic: %w", ErrInvalidArgument)
	}
	for _, r := range topic {
		if r <= ' ' || r == 0x7f || !utf8.ValidRune(r) || r == utf8.RuneError {
			return fmt.Errorf("broker: topic %q contains white space or a control character: %w", topic, ErrInvalidArgument)
		}
	}
	return nil
}
