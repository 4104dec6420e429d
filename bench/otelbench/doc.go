// Package otelbench measures what package brokerotel's tracing and metrics
// cost, as a ratio of the same consumer or publisher with a bare no-op
// handler: under OpenTelemetry's no-op providers (what a service gets without
// an SDK) and under the SDK recording every span and metric with no exporter.
// It measures on the in-process mem broker, where a message costs about 2 µs
// and any overhead shows, and on the real RabbitMQ, where it costs what a
// broker makes it cost. Run it with
//
//	go test -run '^$' -bench . ./bench/otelbench/
package otelbench
