package brokerotel_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/brokerotel"
)

// fakePublisher records what it is given and returns err.
type fakePublisher struct {
	mu   sync.Mutex
	got  [][]*broker.Message
	err  error
	done bool
}

func (f *fakePublisher) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, msgs)
	return f.err
}

func (f *fakePublisher) Close() error { f.done = true; return nil }

// Concurrent publishes of messages sharing one headers map, which other
// goroutines read meanwhile: the race detector fails this test if the wrapper
// writes to the caller's map.
func TestPublishSharedHeadersNoRace(t *testing.T) {
	tp, _ := newTracer(t)
	b := newMem(t, nil)
	pub := brokerotel.WrapPublisher(b.NewPublisher(), brokerotel.WithTracerProvider(tp), noMeter)
	shared := map[string]string{"tenant": "acme", "traceparent": "stale"}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 25 {
				ctx, span := tp.Tracer("test").Start(context.Background(), "request")
				m1 := &broker.Message{Key: fmt.Sprint(g, i), Headers: shared}
				m2 := &broker.Message{Headers: shared}
				if err := pub.Publish(ctx, "shared", m1, m2); err != nil {
					t.Error(err)
				}
				span.End()
				_ = shared["tenant"]
			}
		})
	}
	wg.Wait()
	if want := map[string]string{"tenant": "acme", "traceparent": "stale"}; !maps.Equal(shared, want) {
		t.Errorf("shared headers = %v, want untouched", shared)
	}
	st, err := pub.Stats(context.Background(), "shared", "")
	if err != nil || st.Depth != 200 {
		t.Errorf("Stats through the wrapper = %+v, %v; want depth 200", st, err)
	}
}

// Without a span in the context and with the no-op tracer there is nothing to
// inject, so the caller's messages are passed on as they are.
func TestPublishNothingToInject(t *testing.T) {
	f := &fakePublisher{}
	pub := brokerotel.WrapPublisher(f, noTracer, noMeter)
	m := &broker.Message{Headers: map[string]string{"a": "b"}}
	if err := pub.Publish(context.Background(), "t", m); err != nil {
		t.Fatal(err)
	}
	if f.got[0][0] != m || m.ID == "" {
		t.Errorf("wrapped publisher got %p, want the caller's %p with an ID", f.got[0][0], m)
	}
	if err := pub.Publish(context.Background(), "t"); err != nil || len(f.got) != 2 {
		t.Errorf("empty Publish: %v, calls %d; want it passed on", err, len(f.got))
	}
	if _, err := pub.Stats(context.Background(), "t", ""); !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("Stats of a publisher without them: %v, want ErrUnsupported", err)
	}
	if pub.Unwrap() != f {
		t.Error("Unwrap does not return the wrapped publisher")
	}
	if err := pub.Close(); err != nil || !f.done {
		t.Errorf("Close: %v, wrapped closed %v", err, f.done)
	}
}

// A custom propagator is used for injection, and the receiving side reads the
// same headers.
func TestPublishCustomPropagator(t *testing.T) {
	tp, _ := newTracer(t)
	f := &fakePublisher{}
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	pub := brokerotel.WrapPublisher(f, brokerotel.WithTracerProvider(tp), noMeter, brokerotel.WithPropagator(prop))
	if err := pub.Publish(context.Background(), "t", &broker.Message{}); err != nil {
		t.Fatal(err)
	}
	if h := f.got[0][0].Headers; h["traceparent"] == "" {
		t.Errorf("headers = %v, want traceparent", h)
	}
}

func TestPublishErrors(t *testing.T) {
	tp, rec := newTracer(t)
	mp, reader := newMeter(t)
	opts := []brokerotel.Option{brokerotel.WithTracerProvider(tp), brokerotel.WithMeterProvider(mp), brokerotel.WithSystem("mem")}
	mem := brokerotel.WrapPublisher(newMem(t, &membroker.Options{MaxMessageSize: 200}).NewPublisher(), opts...)
	ctx := context.Background()

	for range 3 {
		if err := mem.Publish(ctx, "ok", &broker.Message{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := mem.Publish(ctx, "ok", &broker.Message{}, &broker.Message{}); err != nil {
		t.Fatal(err)
	}
	big := &broker.Message{Body: make([]byte, 300)}
	if err := mem.Publish(ctx, "big", big); !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Fatalf("oversized publish: %v, want ErrMessageTooLarge", err)
	}
	partial := &broker.PublishError{Topic: "partial", Failed: []broker.FailedMessage{{Index: 1, ID: "b", Err: broker.ErrUnavailable}}}
	fake := brokerotel.WrapPublisher(&fakePublisher{err: partial}, opts...)
	if err := fake.Publish(ctx, "partial", &broker.Message{ID: "a"}, &broker.Message{ID: "b"}, &broker.Message{ID: "c"}); err != partial {
		t.Fatalf("partial publish returned %v, want the wrapped publisher's error", err)
	}

	s := spans(rec, "send big")
	if len(s) != 1 || s[0].Status().Code != codes.Error || attr(s[0], semconv.ErrorTypeKey).AsString() != "message_too_large" {
		t.Errorf("failed send span: %+v", s)
	} else if attr(s[0], semconv.MessagingMessageIDKey).AsString() != big.ID || big.ID == "" {
		t.Errorf("failed send span message id %q, want %q", attr(s[0], semconv.MessagingMessageIDKey).AsString(), big.ID)
	}
	if s := spans(rec, "send partial"); len(s) != 1 || attr(s[0], semconv.ErrorTypeKey).AsString() != "unavailable" {
		t.Errorf("partially failed send span: %+v", s)
	}

	rm := collect(t, reader)
	dest := semconv.MessagingDestinationName
	for _, c := range []struct {
		name  string
		got   int64
		want  int64
		about string
	}{
		{"sent ok", sum(rm, brokerotel.MetricSentMessages, dest("ok")), 5, "3 single + a batch of 2"},
		{"sent big", sum(rm, brokerotel.MetricSentMessages, dest("big"), semconv.ErrorTypeKey.String("message_too_large")), 1, "attempted, with error.type"},
		{"failed big", sum(rm, brokerotel.MetricPublishFailed, dest("big")), 1, "not accepted"},
		{"sent partial", sum(rm, brokerotel.MetricSentMessages, dest("partial")), 3, "all attempted"},
		{"sent partial failed", sum(rm, brokerotel.MetricSentMessages, dest("partial"), semconv.ErrorTypeKey.String("unavailable")), 1, "the one the PublishError lists"},
		{"failed partial", sum(rm, brokerotel.MetricPublishFailed, dest("partial")), 1, "the one the PublishError lists"},
		{"failed ok", sum(rm, brokerotel.MetricPublishFailed, dest("ok")), 0, "none"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d (%s)", c.name, c.got, c.want, c.about)
		}
	}
	if n := histCount(rm, brokerotel.MetricOperationDuration, dest("ok"), semconv.MessagingSystemKey.String("mem")); n != 4 {
		t.Errorf("publish duration count for ok = %d, want 4 calls", n)
	}
	if n := histCount(rm, brokerotel.MetricOperationDuration, dest("big"), semconv.ErrorTypeKey.String("message_too_large")); n != 1 {
		t.Errorf("publish duration count for big = %d, want 1 with error.type", n)
	}
}

func TestWrapPublisherNilPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("WrapPublisher(nil) did not panic")
		}
	}()
	brokerotel.WrapPublisher(nil)
}
