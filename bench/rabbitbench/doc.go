// Package rabbitbench compares the RabbitMQ adapter with raw amqp091-go on the
// same broker, in one run, with the same settings: 256-byte persistent
// messages to a topic exchange bound to one quorum queue, a publisher confirm
// window of 256 on one channel, and the same consumer prefetch. The results
// and how to read them are in README.md.
package rabbitbench
