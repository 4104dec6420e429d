// Package dedupebench measures what idempotency.Dedupe costs a consumer, over
// each store, in one run: b.N 256-byte messages already queued on the
// in-memory broker are consumed by 16 concurrent no-op handlers, bare and then
// behind Dedupe over the memory, Redis, PostgreSQL and SQLite stores. Every
// message has a new ID, so each costs one Claim and one Complete. Each case
// reports msgs/s and x-bare, its rate over the bare rate of the same round;
// the cases run twice, interleaved, because the machine is shared.
//
// Redis and PostgreSQL come from internal/testenv (BROKERKIT_REDIS_URL,
// BROKERKIT_POSTGRES_URL, or containers); SQLite is a WAL file in a temporary
// directory. Run it with
//
//	go test -run '^$' -bench . ./bench/dedupebench/
package dedupebench
