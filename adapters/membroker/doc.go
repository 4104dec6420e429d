// Package membroker is an embedded, in-process broker: the default for demos,
// tests and single-process services, and the reference implementation that the
// conformance suite is written against. Importing it registers the "mem" URL
// scheme.
//
// # URLs
//
//	mem://[name]?max_queued=100000&max_message_size=1048576&<consumer options>
//
// Publishers and consumers opened with the same name share one Broker; the
// empty name is the process-wide default. max_queued bounds the messages held
// per consumer group; a publish that would exceed it fails with broker.ErrFull
// and stores nothing. The consumer options (group, concurrency, order_by_key,
// max_attempts, backoff_min, backoff_max, drain_timeout, dead_letter_topic)
// are described on broker.ConsumerOptions. Unknown parameters are an error.
//
// # Delivery semantics
//
// A topic keeps a queue per consumer group. The default group's queue exists
// from the topic's first publish; another group's queue exists from its first
// subscription, and receives the messages published after it. Consumers of one
// group compete; every group receives every message (fan-out). Messages of one
// Key are never in flight to two consumers of a group at once, and a returned
// message goes back before later ones, so OrderByKey keeps publish order.
// Nothing survives the process: this is not a durable broker.
//
// # As
//
// Received messages have no native form: Message.As always reports false.
package membroker
