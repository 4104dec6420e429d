// Package dedupebench measures what idempotency.Dedupe costs a consumer, on
// every adapter and over every shared store, in one run: for the in-memory
// broker, RabbitMQ, Kafka and SQS (ElasticMQ), a backlog of 256-byte messages
// published before timing starts is consumed by a consumer with Concurrency 16
// (-handlers N to change it) and a handler that does nothing, bare and behind Dedupe over the memory,
// Redis and PostgreSQL stores. Every message has a new ID, so each costs one
// Claim and one Complete. The cases run five times, interleaved, and each
// adapter reports the median bare rate and, per store, the median of its
// ratios to the bare rate of the same round (README.md has the results).
//
// The brokers, Redis and PostgreSQL come from internal/testenv (the
// BROKERKIT_* variables that scripts/brokers.sh env prints, or containers).
// Run it with
//
//	go test -run '^$' -bench . ./bench/dedupebench/
//	go test -run '^$' -bench . ./bench/dedupebench/ -args -handlers 64
package dedupebench
