package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/dlq"
	"github.com/brokerkit/broker/idempotency"
)

// dlqRecorder consumes the dead-letter topic of topic.
func dlqRecorder(t *testing.T, h Harness, topic string) *recorder {
	rec := newRecorder()
	consume(t, h.consumer(t, opts("")), topic+".dlq", rec.handler)
	return rec
}

func testDeadLetterExhausted(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	poison := &broker.Message{Key: "bad", Body: []byte("poison"), Headers: map[string]string{"origin": "test"}}
	good := numbered("g", 5)
	publish(t, h, p, topic, append([]*broker.Message{poison}, good...)...)
	var attempts atomic.Int64
	rec := newRecorder()
	o := opts("")
	o.MaxAttempts = 3
	o.Concurrency = 2
	r := consume(t, h.consumer(t, o), topic, func(ctx context.Context, m *broker.Message) error {
		if m.ID == poison.ID {
			attempts.Add(1)
			return fmt.Errorf("cannot handle attempt %d", m.Attempt)
		}
		rec.add(m)
		return nil
	})
	eventually(t, h, "the good messages, past the poison one", func() bool { return rec.unique() == len(good) })
	dead := dlqRecorder(t, h, topic)
	eventually(t, h, "the poison message in the dead-letter topic", func() bool { return dead.count(poison.ID) > 0 })
	_ = r.stop()
	if n := attempts.Load(); n != 3 {
		t.Errorf("poison message handled %d times, want exactly MaxAttempts = 3", n)
	}
	m := dead.all()[0]
	want := map[string]string{
		dlq.HeaderOriginalTopic: topic,
		dlq.HeaderGroup:         broker.DefaultGroup,
		dlq.HeaderAttempts:      "3",
		dlq.HeaderReason:        "cannot handle attempt 3",
		dlq.HeaderPermanent:     "false",
		"origin":                "test",
	}
	for k, v := range want {
		if m.Headers[k] != v {
			t.Errorf("dead letter header %q = %q, want %q (headers: %v)", k, m.Headers[k], v, m.Headers)
		}
	}
	for _, k := range []string{dlq.HeaderFirstFailedAt, dlq.HeaderLastFailedAt} {
		if _, err := time.Parse(time.RFC3339Nano, m.Headers[k]); err != nil {
			t.Errorf("dead letter header %q = %q: %v", k, m.Headers[k], err)
		}
	}
	if !bytes.Equal(m.Body, poison.Body) || m.Key != poison.Key {
		t.Errorf("dead letter body/key = %q/%q, want %q/%q", m.Body, m.Key, poison.Body, poison.Key)
	}
	assertNotRedelivered(t, h, p, topic, "", poison.ID)
}

func testDeadLetterPermanent(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Body: []byte("not json")}
	publish(t, h, p, topic, m)
	var attempts atomic.Int64
	consume(t, h.consumer(t, opts("")), topic, func(ctx context.Context, got *broker.Message) error {
		attempts.Add(1)
		return broker.Permanent(errors.New("decode: invalid character"))
	})
	dead := dlqRecorder(t, h, topic)
	eventually(t, h, "the message in the dead-letter topic", func() bool { return dead.count(m.ID) > 0 })
	if n := attempts.Load(); n != 1 {
		t.Errorf("a permanent failure was handled %d times, want 1", n)
	}
	hd := dead.all()[0].Headers
	if hd[dlq.HeaderPermanent] != "true" || !strings.Contains(hd[dlq.HeaderReason], "decode: invalid character") || hd[dlq.HeaderAttempts] != "1" {
		t.Errorf("dead letter headers = %v", maps.Clone(hd))
	}
}

// testDeadLetterIf: a failure DeadLetterIf refuses to park keeps the message
// retrying past MaxAttempts, and out of the dead-letter topic, until it
// succeeds; other failures still go there.
func testDeadLetterIf(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	outage := errors.New("downstream unavailable")
	flaky := &broker.Message{Body: []byte("waits out an outage")}
	bad := &broker.Message{Body: []byte("bad input")}
	publish(t, h, p, topic, flaky, bad)
	var flakyAttempts atomic.Int64
	done := make(chan int, 1)
	o := opts("")
	o.MaxAttempts = 2
	o.Backoff = broker.ConstantBackoff(50 * time.Millisecond)
	o.DeadLetterIf = func(_ *broker.Message, err error) bool { return !errors.Is(err, outage) }
	consume(t, h.consumer(t, o), topic, func(ctx context.Context, m *broker.Message) error {
		if m.ID == bad.ID {
			return errors.New("invalid")
		}
		if n := flakyAttempts.Add(1); n <= 4 {
			return fmt.Errorf("attempt %d: %w", n, outage)
		}
		select {
		case done <- m.Attempt:
		default:
		}
		return nil
	})
	dead := dlqRecorder(t, h, topic)
	eventually(t, h, "the message kept from the dead-letter topic to succeed", func() bool { return len(done) > 0 })
	if a := <-done; a != 5 {
		t.Errorf("the kept message succeeded at Attempt %d, want 5 (4 failures past MaxAttempts 2)", a)
	}
	eventually(t, h, "the other failure in the dead-letter topic", func() bool { return dead.count(bad.ID) > 0 })
	if n := dead.count(flaky.ID); n != 0 {
		t.Errorf("DeadLetterIf said no, yet the message reached the dead-letter topic %d times", n)
	}
}

func testRetryDelays(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Body: []byte("flaky")}
	publish(t, h, p, topic, m)
	const minD, maxD = 200 * time.Millisecond, 800 * time.Millisecond
	var (
		mu    sync.Mutex
		times []time.Time
	)
	o := opts("")
	o.Backoff = broker.ExponentialBackoff(minD, maxD)
	o.MaxAttempts = 10
	consume(t, h.consumer(t, o), topic, func(ctx context.Context, got *broker.Message) error {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) <= 3 {
			return fmt.Errorf("failure %d", len(times))
		}
		return nil
	})
	eventually(t, h, "4 attempts", func() bool { mu.Lock(); defer mu.Unlock(); return len(times) >= 4 })
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < 4; i++ {
		ceiling := broker.BackoffCeiling(minD, maxD, i)
		gap := times[i].Sub(times[i-1])
		// The lower bound is exact (equal jitter never goes below half); the
		// upper one allows for the broker's redelivery latency and rounding
		// (SQS visibility timeouts are whole seconds).
		if gap < ceiling/2 || gap > ceiling+1500*time.Millisecond {
			t.Errorf("delay before attempt %d = %v, want within [%v, %v + broker latency]", i+1, gap, ceiling/2, ceiling)
		}
	}
}

func testConcurrentDuplicate(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	id := "dup-" + RandomName("c")
	// The same message published twice: two deliveries with one ID.
	publish(t, h, p, topic, &broker.Message{ID: id, Body: []byte("send email")})
	publish(t, h, p, topic, &broker.Message{ID: id, Body: []byte("send email")})
	var sideEffects, acked atomic.Int64
	store := idempotency.NewMemoryStore(nil)
	o := opts("")
	o.Concurrency = 4
	o.MaxAttempts = 20
	o.Backoff = broker.ExponentialBackoff(20*time.Millisecond, 100*time.Millisecond)
	h2 := broker.Chain(func(ctx context.Context, m *broker.Message) error {
		sideEffects.Add(1)
		time.Sleep(100 * time.Millisecond) // long enough for the copies to overlap
		return nil
	}, func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error {
			err := next(ctx, m)
			if err == nil {
				acked.Add(1)
			}
			return err
		}
	}, idempotency.Dedupe(store, &idempotency.DedupeOptions{Logger: testLogger(t)}))
	consume(t, h.consumer(t, o), topic, h2)
	want := int64(2)
	if h.DeduplicatesByID {
		want = 1
	}
	eventually(t, h, fmt.Sprintf("%d deliveries acknowledged", want), func() bool { return acked.Load() >= want })
	if n := sideEffects.Load(); n != 1 {
		t.Errorf("side effect ran %d times for one message delivered %d times, want once", n, want)
	}
}

func testRedriveRoundTrip(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Key: "k", Body: []byte("fixed later"), Headers: map[string]string{"origin": "test"}}
	publish(t, h, p, topic, m)
	var failed, fixed atomic.Bool
	rec := newRecorder()
	consume(t, h.consumer(t, opts("")), topic, func(ctx context.Context, got *broker.Message) error {
		if !fixed.Load() {
			failed.Store(true)
			return broker.Permanent(errors.New("bug in handler"))
		}
		rec.add(got)
		return nil
	})
	eventually(t, h, "the handler to fail", failed.Load)
	fixed.Store(true) // the bug is fixed: what is redriven now succeeds
	c := h.consumer(t, opts(""))
	var rep dlq.Report
	eventually(t, h, "the message parked and redriven", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
		defer cancel()
		r, err := dlq.Redrive(ctx, c, p, topic+".dlq", dlq.Options{Idle: 2 * time.Second})
		if err != nil {
			t.Fatalf("Redrive: %v", err)
		}
		rep.Moved += r.Moved
		return rep.Moved > 0
	})
	eventually(t, h, "the redriven message handled", func() bool { return rec.count(m.ID) > 0 })
	got := rec.all()[0]
	if !bytes.Equal(got.Body, m.Body) || got.Key != m.Key || got.Headers["origin"] != "test" ||
		got.Headers[dlq.HeaderRedriveCount] != "1" || got.Headers[dlq.HeaderReason] != "" {
		t.Errorf("redriven message = key %q body %q headers %v", got.Key, got.Body, maps.Clone(got.Headers))
	}
	if rep.Moved != 1 {
		t.Errorf("Redrive moved %d messages, want 1", rep.Moved)
	}
}
