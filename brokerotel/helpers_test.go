package brokerotel_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/brokerotel"
	"github.com/brokerkit/broker/driver"
)

// waitTimeout bounds every wait for a condition; generous because the test
// machine is shared.
const waitTimeout = 20 * time.Second

var (
	noMeter  = brokerotel.WithMeterProvider(metricnoop.NewMeterProvider())
	noTracer = brokerotel.WithTracerProvider(tracenoop.NewTracerProvider())
	fast     = broker.ConstantBackoff(time.Millisecond)
)

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
}

func newTracer(t testing.TB) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}

func newMeter(t testing.TB) (*sdkmetric.MeterProvider, *sdkmetric.ManualReader) {
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp, r
}

func newMem(t testing.TB, opts *membroker.Options) *membroker.Broker {
	t.Helper()
	b, err := membroker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// consume runs h on topic with a new consumer of b until the test ends, and
// returns the consumer once it is subscribed (a mem group other than the
// default receives only what is published after that).
func consume(t testing.TB, b *membroker.Broker, opts *broker.ConsumerOptions, topic string, h broker.Handler) *driver.Consumer {
	t.Helper()
	o := broker.ConsumerOptions{}
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := b.NewConsumer(&o)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c, topic, h)
	waitFor(t, "the consumer to subscribe", func() bool {
		st, err := c.Stats(context.Background(), topic, "")
		return err == nil && st.Consumers > 0
	})
	return c
}

// run consumes topic with c and h until the test ends, when it closes c.
func run(t testing.TB, c broker.Consumer, topic string, h broker.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Consume(ctx, topic, h) }()
	t.Cleanup(func() {
		_ = c.Close()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Consume: %v", err)
		}
	})
}

// recv receives from ch, failing the test after waitTimeout.
func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a delivery")
		panic("unreachable")
	}
}

// spans returns the ended spans called name.
func spans(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// attr returns the value of key on s, or an empty value.
func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func collect(t testing.TB, r *sdkmetric.ManualReader) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

func find(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// matches reports whether set has every attribute in want.
func matches(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// sum adds up the int64 sum points of the named metric that have the wanted
// attributes.
func sum(rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) int64 {
	m, _ := find(rm, name)
	var n int64
	if s, ok := m.Data.(metricdata.Sum[int64]); ok {
		for _, p := range s.DataPoints {
			if matches(p.Attributes, want) {
				n += p.Value
			}
		}
	}
	return n
}

// histCount adds up the counts of the float64 histogram's points that have the
// wanted attributes.
func histCount(rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) uint64 {
	m, _ := find(rm, name)
	var n uint64
	if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
		for _, p := range h.DataPoints {
			if matches(p.Attributes, want) {
				n += p.Count
			}
		}
	}
	return n
}

// gauge returns the int64 gauge point with the wanted attributes.
func gauge(rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) (int64, bool) {
	m, _ := find(rm, name)
	if g, ok := m.Data.(metricdata.Gauge[int64]); ok {
		for _, p := range g.DataPoints {
			if matches(p.Attributes, want) {
				return p.Value, true
			}
		}
	}
	return 0, false
}
