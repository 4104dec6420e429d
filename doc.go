// Package broker is one publish/consume API for message brokers.
//
// A service publishes with a [Publisher] and handles messages with a [Consumer]
// and a [Handler]. Which broker sits underneath is configuration: a URL such as
// "mem://", "amqp://guest:guest@localhost:5672/", "kafka://localhost:9092" or
// "sqs://?region=us-east-1", opened with [OpenPublisher] and [OpenConsumer].
// Adapters join the scheme registry when their package is imported, the way
// database/sql drivers do:
//
//	import _ "github.com/brokerkit/broker/adapters/membroker"
//
//	pub, err := broker.OpenPublisher(ctx, os.Getenv("BROKER_URL"))
//
// # Delivery semantics
//
// Every adapter gives the same guarantees, proved by the conformance suite in
// package conformance:
//
//   - Publish returns nil only after the broker has durably accepted every message.
//   - Delivery is at least once. A message is acknowledged only after its handler
//     returned nil. A handler error or panic, a handler cut short by shutdown, or a
//     crashed process means the message comes back with Message.Attempt one higher,
//     after the consumer's backoff delay.
//   - After ConsumerOptions.MaxAttempts failed attempts, or at once when the handler
//     returns a [Permanent] error, the message is moved to the dead-letter topic
//     (by default "<topic>.dlq") with headers that say why. Nothing is dropped.
//   - Ordering holds only within a Key, and only when ConsumerOptions.OrderByKey is
//     set on an adapter that supports it. No adapter promises a global order.
//   - Duplicates happen. Package idempotency makes consuming them safe.
//
// Errors wrap the sentinels in this package ([ErrClosed], [ErrInvalidArgument],
// [ErrMessageTooLarge], ...) so callers can branch with errors.Is whichever broker
// is configured, and the broker client's own error with errors.As.
package broker
