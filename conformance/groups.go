package conformance

// Cases on consumer groups, per-key ordering and handler concurrency.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

func testCompeting(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	// The default group keeps messages published before its consumers joined.
	group := broker.DefaultGroup
	var a, b atomic.Int64
	rec := newRecorder()
	handler := func(n *atomic.Int64) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error {
			n.Add(1)
			rec.add(m)
			time.Sleep(2 * time.Millisecond) // a handler that takes time, so work is shared
			return nil
		}
	}
	consume(t, h.consumer(t, opts(group)), topic, handler(&a))
	consume(t, h.consumer(t, opts(group)), topic, handler(&b))
	// Publish until both consumers have taken part (they may need time to join).
	var sent []*broker.Message
	deadline := time.Now().Add(h.timeout())
	for a.Load() == 0 || b.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d messages, consumer A handled %d and B %d: both should share the work", len(sent), a.Load(), b.Load())
		}
		batch := numbered("c", 20)
		publish(t, h, p, topic, batch...)
		sent = append(sent, batch...)
		time.Sleep(20 * time.Millisecond) // pace the producer; the loop ends on a condition
	}
	eventually(t, h, "every message handled", func() bool { return rec.unique() >= len(sent) })
	for _, m := range sent {
		if rec.count(m.ID) == 0 {
			t.Errorf("message %s lost", m.ID)
		}
	}
	t.Logf("%d messages: A handled %d, B handled %d, %d duplicate(s) while the group formed", len(sent), a.Load(), b.Load(), rec.duplicates())
}

func testFanOut(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	g1, g2 := RandomName("g1"), RandomName("g2")
	r1, r2 := newRecorder(), newRecorder()
	consume(t, h.consumer(t, opts(g1)), topic, r1.handler)
	consume(t, h.consumer(t, opts(g2)), topic, r2.handler)
	// Probe until both groups are subscribed: groups receive what is published after they exist.
	deadline := time.Now().Add(h.timeout())
	for r1.unique() == 0 || r2.unique() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the two groups never both received a probe message")
		}
		publish(t, h, p, topic, &broker.Message{Body: []byte("probe")})
		time.Sleep(50 * time.Millisecond)
	}
	msgs := numbered("f", 50)
	publish(t, h, p, topic, msgs...)
	for _, r := range []*recorder{r1, r2} {
		eventually(t, h, "all 50 messages in each group", func() bool {
			for _, m := range msgs {
				if r.count(m.ID) == 0 {
					return false
				}
			}
			return true
		})
	}
}

func testOrderPerKey(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	const keys, perKey = 4, 40
	var msgs []*broker.Message
	for i := range perKey {
		for k := range keys {
			msgs = append(msgs, &broker.Message{Key: fmt.Sprintf("key-%d", k), Body: fmt.Appendf(nil, "%d", i)})
		}
	}
	for i := 0; i < len(msgs); i += 20 {
		publish(t, h, p, topic, msgs[i:i+20]...)
	}
	var (
		mu         sync.Mutex
		seen       = map[string][]string{}
		active     = map[string]bool{}
		running    int
		maxRunning int
		failedOnce bool
	)
	o := opts("")
	o.OrderByKey = true
	o.Concurrency = 4
	consume(t, h.consumer(t, o), topic, func(ctx context.Context, m *broker.Message) error {
		mu.Lock()
		if active[m.Key] {
			mu.Unlock()
			return broker.Permanent(fmt.Errorf("two messages of key %s handled at once", m.Key))
		}
		active[m.Key] = true
		running++
		maxRunning = max(maxRunning, running)
		fail := m.Key == "key-1" && string(m.Body) == "7" && !failedOnce
		failedOnce = failedOnce || fail
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		active[m.Key] = false
		running--
		if fail {
			return errors.New("fail once, in the middle of a key")
		}
		seen[m.Key] = append(seen[m.Key], string(m.Body))
		return nil
	})
	eventually(t, h, "every message handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range seen {
			n += len(s)
		}
		return n >= keys*perKey
	})
	mu.Lock()
	defer mu.Unlock()
	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		for i, b := range seen[key] {
			if b != fmt.Sprint(i) {
				t.Fatalf("key %s handled out of order: %v", key, seen[key])
			}
		}
	}
	if maxRunning < 2 {
		t.Errorf("at most %d handler ran at once: different keys should run in parallel", maxRunning)
	}
}

func testConcurrencyLimit(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	msgs := numbered("l", 40)
	publish(t, h, p, topic, msgs...)
	var running, peak atomic.Int64
	rec := newRecorder()
	o := opts("")
	o.Concurrency = 3
	consume(t, h.consumer(t, o), topic, func(ctx context.Context, m *broker.Message) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
		running.Add(-1)
		rec.add(m)
		return nil
	})
	eventually(t, h, "40 messages", func() bool { return rec.unique() == 40 })
	if pk := peak.Load(); pk > 3 {
		t.Errorf("%d handlers ran at once with Concurrency 3", pk)
	} else if pk < 2 {
		t.Errorf("at most %d handler ran at once with Concurrency 3 and 40 waiting messages", pk)
	}
}

func testOrderingCapability(t *testing.T, h Harness) {
	o := opts("")
	o.OrderByKey = true
	topic := h.topic(t)
	if c, err := h.NewConsumer(t, opts("")); err == nil {
		// The consumer must claim what the harness declares. It may claim
		// more where the answer depends on the topic (SQS: FIFO queues).
		if caps, ok := broker.CapabilitiesOf(c); ok &&
			(h.Capabilities.FanOut && !caps.FanOut || h.Capabilities.OrderedByKey && !caps.OrderedByKey) {
			t.Errorf("broker.CapabilitiesOf(consumer) = %+v, but the harness declares %+v", caps, h.Capabilities)
		}
		_ = c.Close()
	}
	c, err := h.NewConsumer(t, o)
	if h.Capabilities.OrderedByKey {
		if err != nil {
			t.Fatalf("NewConsumer with OrderByKey on an adapter that declares OrderedByKey: %v", err)
		}
		_ = c.Close()
		return
	}
	// Opening may refuse, or Consume may refuse before receiving: both are "at start".
	if err == nil {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
		defer cancel()
		err = c.Consume(ctx, topic, func(context.Context, *broker.Message) error { return nil })
	}
	if !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("OrderByKey on an adapter without OrderedByKey = %v, want ErrUnsupported", err)
	}
}
