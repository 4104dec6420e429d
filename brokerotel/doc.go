// Package brokerotel instruments brokerkit with OpenTelemetry tracing and
// metrics. It is a package of its own so that services without OpenTelemetry
// never import it; the broker package and its adapters stay standard-library
// only.
//
// It follows the OpenTelemetry messaging semantic conventions (semconv
// v1.43.0) and adds the AttemptKey and OutcomeKey attributes:
//
//   - WrapPublisher decorates a broker.Publisher: a "send <topic>" span per
//     Publish ("create <topic>" spans per message for a batch), the W3C trace
//     context injected into each message's headers, and publish metrics.
//   - Tracing is consumer middleware: a "process <topic>" span per delivery,
//     child of and linked to the producer's span, so that one trace runs from
//     the publishing request to every handler of the message.
//   - Metrics is consumer middleware: handler duration, handled, failed,
//     retried and dead-lettered counts, and handlers in flight.
//   - ObserveStats reports a broker.StatsReader's depth, in-flight, lag,
//     consumers and dead letters as observable gauges, read at collection.
//
// Everything goes to the providers given as options, by default the global
// otel.GetTracerProvider and otel.GetMeterProvider, so that the exporter is the
// service's choice. With the global no-op providers the instrumentation costs
// little (see bench_test.go); with an SDK it costs what the SDK costs.
//
// # Wiring it in a service
//
// Set the providers once at start-up, then wrap the publisher and chain the
// middleware first, so that their view of the handler's error and context is
// the consumer's:
//
//	pubURL := broker.URLFromEnv("mem://")
//	// Consumer parameters go on the consumer's URL only: publishers refuse them.
//	subURL := pubURL + "?group=billing&max_attempts=5"
//	otelOpts := []brokerotel.Option{brokerotel.WithURL(subURL)} // system, group, max attempts
//
//	pub, err := broker.OpenPublisher(ctx, pubURL)
//	...
//	pub = brokerotel.WrapPublisher(pub, otelOpts...)
//
//	sub, err := broker.OpenConsumer(ctx, subURL)
//	...
//	h := broker.Chain(handle, brokerotel.Tracing(otelOpts...), brokerotel.Metrics(otelOpts...), others...)
//	go sub.Consume(ctx, "orders", h)
//
//	if sr, ok := sub.(broker.StatsReader); ok {
//		unregister, err := brokerotel.ObserveStats(sr, []brokerotel.Target{{Topic: "orders"}}, otelOpts...)
//		...
//		defer unregister()
//	}
//
// A consumer built from broker.ConsumerOptions instead of a URL takes
// WithConsumerOptions(opts) for the group and the max attempts.
//
// The consumer engine does not tell middleware what it did with a message, so
// Metrics and Tracing infer the outcome from the handler's error, the message's
// Attempt and the max attempts; Metrics documents the rule exactly.
//
// # Exposing Prometheus
//
// brokerotel does not depend on any exporter. To serve /metrics, a service
// adds go.opentelemetry.io/otel/exporters/prometheus (and
// github.com/prometheus/client_golang) to its own module and makes the
// exporter the reader of its meter provider:
//
//	exporter, err := prometheus.New() // registers with prometheus.DefaultRegisterer
//	if err != nil { ... }
//	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)))
//	http.Handle("/metrics", promhttp.Handler())
//
// Each scrape then runs the ObserveStats callback. The names become, for
// example, brokerkit_queue_depth, brokerkit_consumer_handled_total and
// messaging_process_duration_seconds, with the attributes as labels
// (messaging_destination_name, messaging_consumer_group_name,
// brokerkit_outcome).
package brokerotel
