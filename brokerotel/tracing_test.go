package brokerotel_test

import (
	"context"
	"errors"
	"maps"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/brokerotel"
)

// received is what a test handler saw of one delivery.
type received struct {
	msg  *broker.Message
	span trace.SpanContext
}

// recordingHandler sends each delivery to the returned channel.
func recordingHandler(n int) (broker.Handler, <-chan received) {
	ch := make(chan received, n)
	return func(ctx context.Context, m *broker.Message) error {
		ch <- received{msg: m, span: trace.SpanContextFromContext(ctx)}
		return nil
	}, ch
}

func TestTraceContinuitySingle(t *testing.T) {
	tp, rec := newTracer(t)
	b := newMem(t, nil)
	opts := []brokerotel.Option{brokerotel.WithTracerProvider(tp), noMeter, brokerotel.WithSystem("mem"), brokerotel.WithGroup("billing")}
	pub := brokerotel.WrapPublisher(b.NewPublisher(), opts...)
	h, got := recordingHandler(1)
	consume(t, b, &broker.ConsumerOptions{Group: "billing"}, "orders", broker.Chain(h, brokerotel.Tracing(opts...)))

	ctx, request := tp.Tracer("test").Start(context.Background(), "request")
	shared := map[string]string{"tenant": "acme"}
	msg := &broker.Message{Body: []byte("hello"), Headers: shared}
	if err := pub.Publish(ctx, "orders", msg); err != nil {
		t.Fatal(err)
	}
	request.End()
	if len(msg.ID) != 26 {
		t.Errorf("ID = %q, want one assigned before sending", msg.ID)
	}
	if want := map[string]string{"tenant": "acme"}; !maps.Equal(shared, want) {
		t.Errorf("caller's headers = %v, want them untouched %v", shared, want)
	}

	r := recv(t, got)
	waitFor(t, "the process span to end", func() bool { return len(spans(rec, "process orders")) == 1 })

	send, process := spans(rec, "send orders"), spans(rec, "process orders")[0]
	if len(send) != 1 {
		t.Fatalf("%d send spans, want 1", len(send))
	}
	s := send[0]
	if s.SpanKind() != trace.SpanKindProducer || s.Parent().SpanID() != request.SpanContext().SpanID() {
		t.Errorf("send span: kind %v parent %v, want producer child of the request span", s.SpanKind(), s.Parent().SpanID())
	}
	for key, want := range map[attribute.Key]string{
		semconv.MessagingSystemKey:          "mem",
		semconv.MessagingDestinationNameKey: "orders",
		semconv.MessagingOperationTypeKey:   "send",
		semconv.MessagingOperationNameKey:   "send",
		semconv.MessagingMessageIDKey:       msg.ID,
	} {
		if got := attr(s, key).Emit(); got != want {
			t.Errorf("send span %s = %q, want %q", key, got, want)
		}
	}
	if got := attr(s, semconv.MessagingMessageBodySizeKey).AsInt64(); got != 5 {
		t.Errorf("send span body size = %d, want 5", got)
	}
	if r.msg.Headers["traceparent"] == "" || r.msg.Headers["tenant"] != "acme" {
		t.Errorf("received headers = %v, want traceparent beside the caller's", r.msg.Headers)
	}

	checkProcess(t, process, s.SpanContext(), msg.ID)
	if !r.span.Equal(process.SpanContext()) {
		t.Errorf("handler context span = %v, want the process span %v", r.span.SpanID(), process.SpanContext().SpanID())
	}
	if tid := request.SpanContext().TraceID(); process.SpanContext().TraceID() != tid || s.SpanContext().TraceID() != tid {
		t.Error("publish and process are not in the request's trace")
	}
}

// checkProcess checks a successful process span against the producer span
// whose context travelled with message id.
func checkProcess(t *testing.T, process sdktrace.ReadOnlySpan, producer trace.SpanContext, id string) {
	t.Helper()
	if process.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("process span kind = %v, want consumer", process.SpanKind())
	}
	if p := process.Parent(); p.SpanID() != producer.SpanID() || p.TraceID() != producer.TraceID() || !p.IsRemote() {
		t.Errorf("process span parent = %v, want the remote producer span %v", p.SpanID(), producer.SpanID())
	}
	if l := process.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != producer.SpanID() {
		t.Errorf("process span links = %v, want one to the producer span", l)
	}
	if got := attr(process, semconv.MessagingMessageIDKey).AsString(); got != id {
		t.Errorf("process span message id = %q, want %q", got, id)
	}
	if got := attr(process, semconv.MessagingConsumerGroupNameKey).AsString(); got != "billing" {
		t.Errorf("process span group = %q, want billing", got)
	}
	if got := attr(process, semconv.MessagingOperationTypeKey).AsString(); got != "process" {
		t.Errorf("process span operation type = %q, want process", got)
	}
	if got := attr(process, brokerotel.AttemptKey).AsInt64(); got != 1 {
		t.Errorf("process span attempt = %d, want 1", got)
	}
	if got := attr(process, brokerotel.OutcomeKey).AsString(); got != brokerotel.OutcomeOK {
		t.Errorf("process span outcome = %q, want ok", got)
	}
	if process.Status().Code == codes.Error {
		t.Errorf("process span status = %v, want not error", process.Status())
	}
}

func TestTraceContinuityBatch(t *testing.T) {
	tp, rec := newTracer(t)
	b := newMem(t, nil)
	opts := []brokerotel.Option{brokerotel.WithTracerProvider(tp), noMeter, brokerotel.WithGroup("billing")}
	pub := brokerotel.WrapPublisher(b.NewPublisher(), opts...)
	h, got := recordingHandler(3)
	consume(t, b, &broker.ConsumerOptions{Group: "billing"}, "orders", broker.Chain(h, brokerotel.Tracing(opts...)))

	ctx, request := tp.Tracer("test").Start(context.Background(), "request")
	shared := map[string]string{"tenant": "acme"}
	msgs := []*broker.Message{
		{ID: "a", Body: []byte("1"), Headers: shared},
		{ID: "b", Body: []byte("22"), Headers: shared},
		{Body: []byte("333")}, // nil headers, no ID
	}
	if err := pub.Publish(ctx, "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	request.End()
	if len(shared) != 1 || msgs[2].Headers != nil || msgs[2].ID == "" {
		t.Errorf("caller's messages changed: shared %v, third %+v", shared, msgs[2])
	}

	for range msgs {
		recv(t, got)
	}
	waitFor(t, "3 process spans", func() bool { return len(spans(rec, "process orders")) == 3 })

	creates := map[string]sdktrace.ReadOnlySpan{} // by message ID
	for _, c := range spans(rec, "create orders") {
		if c.SpanKind() != trace.SpanKindProducer || c.Parent().SpanID() != request.SpanContext().SpanID() {
			t.Errorf("create span: kind %v parent %v, want producer child of the request", c.SpanKind(), c.Parent().SpanID())
		}
		creates[attr(c, semconv.MessagingMessageIDKey).AsString()] = c
	}
	if len(creates) != 3 {
		t.Fatalf("create spans for %d distinct messages, want 3", len(creates))
	}
	send := spans(rec, "send orders")
	if len(send) != 1 {
		t.Fatalf("%d send spans, want 1", len(send))
	}
	if k := send[0].SpanKind(); k != trace.SpanKindClient {
		t.Errorf("batch send span kind = %v, want client (the create spans are the producers)", k)
	}
	if n := attr(send[0], semconv.MessagingBatchMessageCountKey).AsInt64(); n != 3 {
		t.Errorf("batch message count = %d, want 3", n)
	}
	linked := map[trace.SpanID]bool{}
	for _, l := range send[0].Links() {
		linked[l.SpanContext.SpanID()] = true
	}
	for id, c := range creates {
		if !linked[c.SpanContext().SpanID()] {
			t.Errorf("send span has no link to the create span of %s", id)
		}
	}
	for _, p := range spans(rec, "process orders") {
		id := attr(p, semconv.MessagingMessageIDKey).AsString()
		c, ok := creates[id]
		if !ok {
			t.Errorf("process span for unknown message %q", id)
			continue
		}
		checkProcess(t, p, c.SpanContext(), id)
		if p.SpanContext().TraceID() != request.SpanContext().TraceID() {
			t.Errorf("process span of %s is not in the request's trace", id)
		}
	}
}

func TestTracingHandlerFailure(t *testing.T) {
	tp, rec := newTracer(t)
	b := newMem(t, nil)
	opts := []brokerotel.Option{brokerotel.WithTracerProvider(tp), noMeter, brokerotel.WithMaxAttempts(3)}
	pub := brokerotel.WrapPublisher(b.NewPublisher(), opts...)
	if err := pub.Publish(context.Background(), "jobs",
		&broker.Message{ID: "bad"}, &broker.Message{ID: "panics"}, &broker.Message{ID: "flaky"}); err != nil {
		t.Fatal(err)
	}
	h := func(ctx context.Context, m *broker.Message) error {
		switch {
		case m.ID == "bad":
			return broker.Permanent(errors.New("cannot decode"))
		case m.ID == "panics" && m.Attempt == 1:
			panic("boom")
		case m.ID == "flaky" && m.Attempt < 3:
			return broker.ErrUnavailable
		}
		return nil
	}
	consume(t, b, &broker.ConsumerOptions{MaxAttempts: 3, Backoff: fast}, "jobs", broker.Chain(h, brokerotel.Tracing(opts...)))
	waitFor(t, "6 process spans", func() bool { return len(spans(rec, "process jobs")) == 6 })

	type key struct {
		id      string
		attempt int64
	}
	type want struct {
		status  codes.Code
		errType string
		outcome string
	}
	wants := map[key]want{
		{"bad", 1}:    {codes.Error, "permanent", brokerotel.OutcomeDeadLetter},
		{"panics", 1}: {codes.Error, "panic", brokerotel.OutcomeRetry},
		{"panics", 2}: {codes.Unset, "", brokerotel.OutcomeOK},
		{"flaky", 1}:  {codes.Error, "unavailable", brokerotel.OutcomeRetry},
		{"flaky", 2}:  {codes.Error, "unavailable", brokerotel.OutcomeRetry},
		{"flaky", 3}:  {codes.Unset, "", brokerotel.OutcomeOK},
	}
	for _, s := range spans(rec, "process jobs") {
		k := key{attr(s, semconv.MessagingMessageIDKey).AsString(), attr(s, brokerotel.AttemptKey).AsInt64()}
		w, ok := wants[k]
		if !ok {
			t.Errorf("unexpected process span %+v", k)
			continue
		}
		delete(wants, k)
		if s.Status().Code != w.status {
			t.Errorf("%+v: status %v, want %v", k, s.Status(), w.status)
		}
		if got := attr(s, semconv.ErrorTypeKey).AsString(); got != w.errType {
			t.Errorf("%+v: error.type %q, want %q", k, got, w.errType)
		}
		if got := attr(s, brokerotel.OutcomeKey).AsString(); got != w.outcome {
			t.Errorf("%+v: outcome %q, want %q", k, got, w.outcome)
		}
		if w.status == codes.Error && w.errType != "panic" && len(s.Events()) == 0 {
			t.Errorf("%+v: no exception event recorded", k)
		}
	}
	for k := range wants {
		t.Errorf("no process span for %+v", k)
	}
}

func TestTracingWithoutProducerContext(t *testing.T) {
	tp, rec := newTracer(t)
	h := brokerotel.Tracing(brokerotel.WithTracerProvider(tp))(func(context.Context, *broker.Message) error { return nil })
	ctx, parent := tp.Tracer("test").Start(context.Background(), "poll")
	if err := h(ctx, &broker.Message{ID: "x", Topic: "t", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	p := spans(rec, "process t")
	if len(p) != 1 {
		t.Fatalf("%d process spans, want 1", len(p))
	}
	if p[0].Parent().SpanID() != parent.SpanContext().SpanID() || len(p[0].Links()) != 0 {
		t.Errorf("process span without producer context: parent %v links %v, want the context's span and no link",
			p[0].Parent().SpanID(), p[0].Links())
	}
}
