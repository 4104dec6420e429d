// Package rabbitbroker is the RabbitMQ adapter, on amqp091-go. Importing it
// registers the "amqp" and "amqps" URL schemes.
//
// # URLs
//
//	amqp://user:password@host:5672/vhost?<parameters>
//	amqps://user:password@host:5671/vhost?<parameters>
//
// The URL is an AMQP URI as RabbitMQ defines it; its own parameters
// (heartbeat, connection_timeout, channel_max, certfile, keyfile, cacertfile,
// server_name_indication, auth_mechanism) go to amqp091 untouched. The
// adapter's parameters are the fields of Options:
//
//	confirm_window=256       unconfirmed publishes per channel
//	channel_pool=4           publishing channels on the connection
//	max_message_size=16777216
//	delivery_limit=20        x-delivery-limit of the group queues
//
// and, for consumers, the common ones described on broker.ConsumerOptions:
// group, concurrency, order_by_key, max_attempts, backoff_min, backoff_max,
// drain_timeout, dead_letter_topic. Unknown parameters are an error wrapping
// broker.ErrInvalidArgument. Credentials never appear in errors or logs.
//
// # Topology
//
// A topic is a durable topic exchange of that name. A consumer group is a
// durable quorum queue "<topic>.<group>" bound to it with "#", so every group
// receives every message (fan-out) and the consumers of one group compete.
// Publishing declares the exchange and the queue of broker.DefaultGroup
// ("<topic>.default"), so messages published before any consumer ran are
// kept; a group's queue exists from its first subscription. Declarations are
// idempotent; a queue or exchange that exists with other arguments is refused
// by RabbitMQ, and that is an error wrapping broker.ErrInvalidArgument that
// says so.
//
// Group queues carry a dead-letter exchange "<topic>.dlq" (with its own
// default queue "<topic>.dlq.default", declared alongside), at-least-once
// dead-lettering and x-delivery-limit=delivery_limit. The consumer engine
// dead-letters by itself after MaxAttempts, with the dlq headers, by
// publishing to "<topic>.dlq"; the broker's limit is the safety net for a
// message that crashes the process every time, which no handler can report.
// The broker dead-letters a message returned more than delivery_limit times;
// the engine needs MaxAttempts-1 returns, so NewConsumer requires MaxAttempts
// <= delivery_limit, and the rest is margin: every return counts, including
// the ones a consumer makes when it shuts down or crashes with the message in
// hand, so each of those uses one spare return. With the defaults (20 and 5
// attempts) there are sixteen. Once the margin is used up the broker
// dead-letters the message itself, into the same "<topic>.dlq" with its
// x-death headers instead of the dlq ones: never lost. (The broker's
// dead-letter exchange is "<topic>.dlq" whatever a consumer's DeadLetterTopic
// says, as it is a queue argument too.) Since the limit is a
// queue argument, every URL that touches a topic must use the same
// delivery_limit. Queues of topics named "*.dlq" have no dead-letter exchange
// and a limit of a million.
//
// # Delivery semantics
//
// Publish uses publisher confirms, mandatory publishing and persistent
// messages. Messages are pipelined on one of the pooled channels, up to
// confirm_window waiting for their confirm, and Publish returns once the
// broker confirmed every one. A message the broker could not route (no queue
// bound) fails with broker.ErrNotFound; a nack, or a channel that closed
// before the confirm, fails it with broker.ErrUnavailable; all are named in a
// *broker.PublishError. A message whose confirm was lost may still have been
// stored, so retrying may duplicate it: at-least-once.
//
// Message.ID is the AMQP message-id, Key the routing key and the HeaderKey
// header, Headers are AMQP headers (string values), and PublishedAt the AMQP
// timestamp, which has a resolution of one second. The body travels verbatim.
// On receipt, header values that are not strings are rendered as text;
// tables and arrays (such as x-death) are only in the native delivery.
// Attempt is the quorum queue's x-delivery-count plus one: it counts
// deliveries, so a delivery cut short by a consumer shutdown counts too.
//
// A consumer's broker-side prefetch (basic.qos) is twice the engine's window,
// because a failed message is held unacknowledged during its backoff delay and
// then rejected with requeue (per message): holding it keeps the broker's
// delivery count and hides it from every consumer meanwhile, where a
// republished copy in a TTL queue would lose the count and block behind longer
// delays; the spare prefetch keeps a few held messages from stalling the rest.
// Messages come back at the head of the queue.
//
// Acknowledgements are grouped: acks gather for up to a millisecond (or until
// a quarter of the prefetch is waiting), and a run of finished deliveries goes
// out as one basic.ack with multiple=true, which on a quorum queue saves the
// broker a log entry per message (the consumer benchmark runs 1.5x faster than
// acking each message). A multiple ack never covers a delivery still being
// handled or waiting out a retry delay: an ack behind one goes out on its own
// after at most 50ms. Closing a consumer sends every pending ack first; a
// crash loses at most those few milliseconds of acks, which the broker then
// redelivers.
//
// With OrderByKey, the consumers of a group take turns: the active one holds
// an exclusive queue "<topic>.<group>.order-lock" (RabbitMQ deletes it when
// its connection closes, so a crashed consumer cannot keep it) and the others
// stand by, trying every second. One queue delivers in publish order to one
// consumer, which runs different keys in parallel and one key at a time. A
// graceful hand-over returns the unacknowledged messages before releasing the
// lock; after a crash the broker returns them and drops the lock on its own,
// and a standby polling once a second takes over after both in practice. All
// consumers of a group should agree on OrderByKey: an unordered consumer does
// not take the lock.
//
// When the connection or a channel drops (a broker restart, a network
// failure), publishers and consumers reconnect by themselves with backoff;
// nothing is restarted by the caller. During the outage Publish fails at once
// with an error wrapping broker.ErrUnavailable, which is retryable, and the
// consumer's receive loop retries. Unacknowledged messages go back to their
// queue and are delivered again. RabbitMQ's consumer_timeout (30 minutes by
// default) bounds how long a handler may keep a message.
//
// Stats come from passive queue declarations: Depth and Lag are the group
// queue's ready messages, Consumers its consumers, DeadLetters the ready
// messages of the dead-letter topic's default queue. AMQP does not report
// unacknowledged messages, so InFlight is what this consumer holds (handed to
// handlers or waiting out a retry delay), and -1 from a publisher. Stats of a
// group whose queue does not exist yet fail with broker.ErrNotFound.
//
// # As
//
// Received messages are amqp091.Delivery values:
//
//	var d amqp091.Delivery
//	if m.As(&d) { ... d.Headers["x-death"] ... }
package rabbitbroker
