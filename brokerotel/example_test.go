package brokerotel_test

import (
	"context"
	"fmt"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/brokerotel"
)

// One trace from the publishing request to the handler: the producer's span
// context travels in the message headers.
func ExampleTracing() {
	spans := tracetest.NewSpanRecorder() // a real service exports instead
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	opts := []brokerotel.Option{brokerotel.WithTracerProvider(tp), brokerotel.WithURL("mem://?group=default")}

	b, _ := membroker.New(nil)
	pub := brokerotel.WrapPublisher(b.NewPublisher(), opts...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	reqCtx, request := tp.Tracer("example").Start(ctx, "POST /orders")
	_ = pub.Publish(reqCtx, "orders", &broker.Message{Body: []byte("order 1")})
	request.End()

	sub, _ := b.NewConsumer(nil)
	done := make(chan struct{})
	handle := func(ctx context.Context, m *broker.Message) error {
		defer close(done)
		fmt.Println("handling", string(m.Body))
		return nil
	}
	go func() { _ = sub.Consume(ctx, "orders", broker.Chain(handle, brokerotel.Tracing(opts...))) }()
	<-done
	_ = sub.Close() // waits for the handler, and so for its span

	for _, s := range spans.Ended() {
		fmt.Printf("%-14s %-8s same trace: %v\n", s.Name(), s.SpanKind(),
			s.SpanContext().TraceID() == request.SpanContext().TraceID())
	}
	// Output:
	// handling order 1
	// send orders    producer same trace: true
	// POST /orders   internal same trace: true
	// process orders consumer same trace: true
}

// Queue depth read from the broker at each collection.
func ExampleObserveStats() {
	reader := sdkmetric.NewManualReader() // a real service uses a Prometheus or OTLP reader
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	b, _ := membroker.New(nil)
	pub := b.NewPublisher()
	_ = pub.Publish(context.Background(), "orders", &broker.Message{}, &broker.Message{}, &broker.Message{})

	unregister, err := brokerotel.ObserveStats(b.NewPublisher(), []brokerotel.Target{{Topic: "orders"}},
		brokerotel.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer unregister()

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == brokerotel.MetricDepth {
			fmt.Println(m.Name, m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value)
		}
	}
	// Output: brokerkit.queue.depth 3
}
