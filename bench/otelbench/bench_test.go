package otelbench

import (
	"context"
	"sync/atomic"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/brokerotel"
	"github.com/brokerkit/broker/internal/testenv"
)

// The benchmarks compare bare handlers and publishers with instrumented ones,
// under the no-op providers (what a service gets without an OpenTelemetry SDK)
// and under the SDK without an exporter (span and metric bookkeeping only).
// The ratio bare ns/op / instrumented ns/op is the throughput kept.

func TestMain(m *testing.M) { testenv.Main(m) }

var body256 = make([]byte, 256)

// traceparent is what a wrapped publisher puts in a message.
const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

type setup struct {
	name string
	opts func(b *testing.B) []brokerotel.Option // nil: no instrumentation
}

var setups = []setup{
	{"bare", nil},
	{"noop", func(*testing.B) []brokerotel.Option {
		return []brokerotel.Option{
			brokerotel.WithTracerProvider(tracenoop.NewTracerProvider()),
			brokerotel.WithMeterProvider(metricnoop.NewMeterProvider()),
		}
	}},
	{"sdk", func(b *testing.B) []brokerotel.Option {
		tp := sdktrace.NewTracerProvider() // records spans, exports nowhere
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
		return []brokerotel.Option{brokerotel.WithTracerProvider(tp), brokerotel.WithMeterProvider(mp)}
	}},
}

func instrument(h broker.Handler, opts []brokerotel.Option) broker.Handler {
	if opts == nil {
		return h
	}
	return broker.Chain(h, brokerotel.Tracing(opts...), brokerotel.Metrics(opts...))
}

// BenchmarkHandler calls a handler directly, without a consumer: the absolute
// cost the middleware adds per message.
func BenchmarkHandler(b *testing.B) {
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			var opts []brokerotel.Option
			if s.opts != nil {
				opts = s.opts(b)
			}
			h := instrument(func(context.Context, *broker.Message) error { return nil }, opts)
			ctx := context.Background()
			m := &broker.Message{ID: broker.NewID(), Topic: "bench", Attempt: 1, Body: body256,
				Headers: map[string]string{"traceparent": traceparent}}
			b.ReportAllocs()
			for b.Loop() {
				_ = h(ctx, m)
			}
		})
	}
}

// BenchmarkConsume publishes b.N messages in batches of 100 to the mem broker
// and consumes them with 4 handlers, as membroker's BenchmarkEndToEnd does;
// only the consumer's handler differs between the cases.
func BenchmarkConsume(b *testing.B) {
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			br, err := membroker.New(&membroker.Options{MaxQueued: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			c, err := br.NewConsumer(&broker.ConsumerOptions{Concurrency: 4})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			consumeAll(b, s, br.NewPublisher(), c, "e2e")
		})
	}
}

// consumeAll publishes b.N messages to topic in batches of 100 while c
// consumes them behind s's instrumentation, and reports msgs/s from the
// first publish to the last message handled.
func consumeAll(b *testing.B, s setup, p broker.Publisher, c broker.Consumer, topic string) {
	var opts []brokerotel.Option
	if s.opts != nil {
		opts = s.opts(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var handled atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	h := instrument(func(context.Context, *broker.Message) error {
		if handled.Add(1) == target {
			close(done)
		}
		return nil
	}, opts)
	go func() { _ = c.Consume(ctx, topic, h) }()
	headers := map[string]string{"traceparent": traceparent}
	b.ReportAllocs()
	b.ResetTimer()
	batch := make([]*broker.Message, 0, 100)
	for i := 0; i < b.N; i++ {
		batch = append(batch, &broker.Message{Body: body256, Headers: headers})
		if len(batch) == cap(batch) || i == b.N-1 {
			if err := p.Publish(ctx, topic, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	<-done
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublish publishes one 256-byte message per call to the mem broker,
// through the bare publisher or WrapPublisher, inside a request span when a
// tracer records one.
func BenchmarkPublish(b *testing.B) {
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			br, err := membroker.New(&membroker.Options{MaxQueued: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			var p broker.Publisher = br.NewPublisher()
			if s.opts != nil {
				p = brokerotel.WrapPublisher(p, s.opts(b)...)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Publish(ctx, "bench", &broker.Message{Body: body256}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
