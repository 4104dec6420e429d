package conformance

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

// fast is the backoff the suite's consumers use, so redelivery cases finish
// quickly on every broker.
var fast = broker.ExponentialBackoff(20*time.Millisecond, 200*time.Millisecond)

// opts returns consumer options for a case: a fast backoff and the given group.
func opts(group string) broker.ConsumerOptions {
	return broker.ConsumerOptions{Group: group, Backoff: fast, DrainTimeout: 10 * time.Second}
}

// running is a Consume call in a goroutine.
type running struct {
	c      broker.Consumer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// consume starts c.Consume(topic, h) in a goroutine; the test's cleanup stops
// it and closes c.
func consume(t *testing.T, c broker.Consumer, topic string, h broker.Handler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Consume(ctx, topic, h) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels the Consume context, waits for Consume to return and closes
// the consumer. It returns what Consume returned.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
		_ = r.c.Close()
	})
	return r.err
}

// recorder keeps what a handler saw, safe for concurrent use.
type recorder struct {
	mu   sync.Mutex
	msgs []*broker.Message
	ids  map[string]int
}

func newRecorder() *recorder { return &recorder{ids: map[string]int{}} }

func (r *recorder) add(m *broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := *m
	r.msgs = append(r.msgs, &cp)
	r.ids[m.ID]++
}

// handler records every message and acknowledges it.
func (r *recorder) handler(ctx context.Context, m *broker.Message) error {
	r.add(m)
	return nil
}

func (r *recorder) unique() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func (r *recorder) all() []*broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*broker.Message(nil), r.msgs...)
}

func (r *recorder) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := 0
	for _, n := range r.ids {
		d += n - 1
	}
	return d
}

// eventually polls cond until it holds, failing the test with what after the
// harness timeout.
func eventually(t *testing.T, h Harness, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(h.timeout())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", h.timeout(), what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// publish publishes msgs to topic with a deadline, failing the test on error.
func publish(t *testing.T, h Harness, p broker.Publisher, topic string, msgs ...*broker.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
	defer cancel()
	if err := p.Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("Publish(%q, %d messages): %v", topic, len(msgs), err)
	}
}

// numbered returns n messages with bodies "<prefix>-<i>" and no IDs.
func numbered(prefix string, n int) []*broker.Message {
	ms := make([]*broker.Message, n)
	for i := range ms {
		ms[i] = &broker.Message{Body: fmt.Appendf(nil, "%s-%d", prefix, i)}
	}
	return ms
}

func (h Harness) publisher(t *testing.T) broker.Publisher {
	t.Helper()
	p, err := h.NewPublisher(t)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func (h Harness) consumer(t *testing.T, o broker.ConsumerOptions) broker.Consumer {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	c, err := h.NewConsumer(t, o)
	if err != nil {
		t.Fatalf("NewConsumer(%+v): %v", o, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// assertQuiet proves that none of the given IDs is delivered again to
// group: it publishes a marker, consumes until the marker arrives, and fails
// if any ID came back on the way.
func assertNotRedelivered(t *testing.T, h Harness, p broker.Publisher, topic, group string, ids ...string) {
	t.Helper()
	marker := &broker.Message{Body: []byte("marker")}
	publish(t, h, p, topic, marker)
	rec := newRecorder()
	r := consume(t, h.consumer(t, opts(group)), topic, rec.handler)
	eventually(t, h, "the marker message", func() bool { return rec.count(marker.ID) > 0 })
	_ = r.stop()
	for _, id := range ids {
		if n := rec.count(id); n > 0 {
			t.Errorf("message %s was delivered again %d time(s) after it was acknowledged", id, n)
		}
	}
}

// testLogger sends a consumer's log lines to t.Log, so they show with the
// failing case; lines after the test ended are dropped.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
