// Package smoke checks, with each broker's own Go client and no brokerkit code,
// that the services the integration tests rely on are really there and behave as
// the adapters expect: a RabbitMQ quorum queue with publisher confirms, a Kafka
// topic written with acks=all and read back by a consumer group, standard and FIFO
// SQS queues, Redis SET NX PX, and a PostgreSQL table.
//
// Endpoints come from internal/testenv: run `make brokers-up` and
// `eval "$(scripts/brokers.sh env)"` first, or have Docker running. The package
// holds only tests.
package smoke
