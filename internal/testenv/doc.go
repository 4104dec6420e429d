// Package testenv tells tests where to find the real brokers and databases that
// brokerkit's integration tests run against: RabbitMQ, Apache Kafka, SQS
// (ElasticMQ), Redis and PostgreSQL.
//
// Each function (AMQPURL, KafkaBrokers, SQSEndpoint, RedisURL, PostgresURL)
// decides in this order:
//
//  1. The service's environment variable (BROKERKIT_AMQP_URL, ...) is set: its
//     value is used, and the service must answer on its TCP port within a few
//     seconds, or the test fails with a message naming the service and the
//     variable.
//  2. A Docker engine is reachable: testcontainers-go starts the service once per
//     test binary; every test in the binary shares it.
//  3. Otherwise the test is skipped, or fails when CI=true, with a message that
//     names the service, the variable and `make brokers-up`, which starts native
//     brokers on 127.0.0.1 (scripts/brokers.sh) on machines without Docker.
//
// Containers are terminated by Main after the package's tests ran, when the
// package calls it from TestMain; otherwise testcontainers' reaper removes them
// when the test binary exits. A container is not tied to the t.Cleanup of the
// test that happened to start it, because later tests in the binary share it.
//
// Only tests import this package; it is the one place that imports
// testcontainers-go.
package testenv
