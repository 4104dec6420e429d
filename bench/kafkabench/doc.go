// Package kafkabench compares the Kafka adapter with raw segmentio/kafka-go on
// the same broker, in one run, with the same settings: 256-byte messages, a
// Writer with acks=all, a 200 µs batch timeout, batches of up to 500 messages
// and murmur2 key hashing; a consumer-group Reader with the adapter's fetch,
// heartbeat and session settings, committing every 200 ms, against the
// adapter's consumer (kafka-go's ConsumerGroup and Fetch requests of its
// own). The results and how to read them are in README.md.
package kafkabench
