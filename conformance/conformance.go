package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

// Run runs every case of the suite against the adapter behind h.
func Run(t *testing.T, h Harness) {
	if h.NewPublisher == nil || h.NewConsumer == nil {
		t.Fatal("conformance: Harness needs NewPublisher and NewConsumer")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.needs != nil {
				if missing := c.needs(h.Capabilities); missing != "" {
					t.Skipf("the adapter does not declare %s", missing)
				}
			}
			c.run(t, h)
		})
	}
}

type testCase struct {
	name  string
	needs func(broker.Capabilities) string // the missing capability, or ""
	run   func(*testing.T, Harness)
}

var cases = []testCase{
	{name: "RoundTrip", run: testRoundTrip},
	{name: "ThousandMessagesNoLoss", run: testThousand},
	{name: "AckIsNotRedelivered", run: testAckNotRedelivered},
	{name: "ErrorRedeliversWithNextAttempt", run: testErrorRedelivers},
	{name: "PanicRedelivers", run: testPanicRedelivers},
	{name: "StoppedMidHandlerRedeliversToNextConsumer", run: testStoppedMidHandler},
	{name: "CompetingConsumersShareWork", run: testCompeting},
	{name: "FanOutAcrossGroups", run: testFanOut, needs: func(c broker.Capabilities) string {
		if !c.FanOut {
			return "FanOut"
		}
		return ""
	}},
	{name: "OrderPerKey", run: testOrderPerKey, needs: func(c broker.Capabilities) string {
		if !c.OrderedByKey {
			return "OrderedByKey"
		}
		return ""
	}},
	{name: "ConcurrencyLimit", run: testConcurrencyLimit},
	{name: "CloseDrainsInFlight", run: testCloseDrains},
	{name: "ContextCancelStopsConsume", run: testCtxCancel},
	{name: "UseAfterClose", run: testUseAfterClose},
	{name: "MessageTooLarge", run: testTooLarge},
	{name: "InvalidTopic", run: testInvalidTopic},
	{name: "StatsDepth", run: testStatsDepth},
	{name: "DeadLetterAfterMaxAttempts", run: testDeadLetterExhausted},
	{name: "PermanentErrorDeadLettersAtOnce", run: testDeadLetterPermanent},
	{name: "DeadLetterIfKeepsRetrying", run: testDeadLetterIf},
	{name: "RetryDelaysFollowBackoff", run: testRetryDelays},
	{name: "ConcurrentDuplicateRunsSideEffectOnce", run: testConcurrentDuplicate},
	{name: "RedriveRoundTrip", run: testRedriveRoundTrip},
	{name: "OrderingCapabilityCheckedAtStart", run: testOrderingCapability},
}

func testRoundTrip(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	binary := []byte{0x00, 0xff, 0xfe, 0x80, 'a', 0x00}
	sent := []*broker.Message{
		{ID: "id-" + RandomName("rt"), Key: "customer-7", Body: binary,
			Headers: map[string]string{"content-type": "application/octet-stream", "trace": "00-abc-01", "unicode": "žluťoučký kůň"}},
		{Key: "", Body: nil},
		{Body: []byte("plain text"), Headers: map[string]string{"only": "one"}},
	}
	before := time.Now()
	publish(t, h, p, topic, sent...)
	for i, m := range sent {
		if m.ID == "" {
			t.Fatalf("message #%d has no ID after Publish; Publish must assign one", i)
		}
	}
	if sent[1].ID == sent[2].ID {
		t.Fatalf("Publish assigned the same ID %q twice", sent[1].ID)
	}
	rec := newRecorder()
	consume(t, h.consumer(t, opts("")), topic, rec.handler)
	eventually(t, h, "3 messages", func() bool { return rec.unique() == 3 })
	got := map[string]*broker.Message{}
	for _, m := range rec.all() {
		got[m.ID] = m
	}
	for i, want := range sent {
		m := got[want.ID]
		if m == nil {
			t.Fatalf("message #%d (id %s) not received", i, want.ID)
		}
		if m.Key != want.Key {
			t.Errorf("#%d Key = %q, want %q", i, m.Key, want.Key)
		}
		if !bytes.Equal(m.Body, want.Body) || len(m.Body) != len(want.Body) {
			t.Errorf("#%d Body = %x, want %x", i, m.Body, want.Body)
		}
		for k, v := range want.Headers {
			if m.Headers[k] != v {
				t.Errorf("#%d header %q = %q, want %q", i, k, m.Headers[k], v)
			}
		}
		if m.Topic != topic {
			t.Errorf("#%d Topic = %q, want %q", i, m.Topic, topic)
		}
		if m.Attempt != 1 {
			t.Errorf("#%d Attempt = %d on first delivery, want 1", i, m.Attempt)
		}
		if m.PublishedAt.IsZero() || m.PublishedAt.Before(before.Add(-time.Minute)) || m.PublishedAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("#%d PublishedAt = %v, want about %v", i, m.PublishedAt, before)
		}
	}
}

func testThousand(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	const n = 1000
	msgs := numbered("m", n)
	var wg sync.WaitGroup
	for i := 0; i < n; i += 100 {
		wg.Add(1)
		go func(batch []*broker.Message) {
			defer wg.Done()
			publish(t, h, p, topic, batch...)
		}(msgs[i : i+100])
	}
	wg.Wait()
	rec := newRecorder()
	o := opts("")
	o.Concurrency = 8
	consume(t, h.consumer(t, o), topic, rec.handler)
	eventually(t, h, fmt.Sprintf("%d unique messages", n), func() bool { return rec.unique() == n })
	for _, m := range msgs {
		if rec.count(m.ID) == 0 {
			t.Errorf("message %s lost", m.ID)
		}
	}
	if d := rec.duplicates(); d > 0 {
		t.Errorf("%d duplicate deliveries without any failure or restart", d)
	}
}

func testAckNotRedelivered(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Body: []byte("once")}
	publish(t, h, p, topic, m)
	rec := newRecorder()
	r := consume(t, h.consumer(t, opts("")), topic, rec.handler)
	eventually(t, h, "the message", func() bool { return rec.count(m.ID) == 1 })
	if err := r.stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v after cancel", err)
	}
	assertNotRedelivered(t, h, p, topic, "", m.ID)
}

func testErrorRedelivers(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Key: "k", Body: []byte("fail once"), Headers: map[string]string{"h": "v"}}
	publish(t, h, p, topic, m)
	rec := newRecorder()
	r := consume(t, h.consumer(t, opts("")), topic, func(ctx context.Context, got *broker.Message) error {
		rec.add(got)
		if got.Attempt == 1 {
			return errors.New("transient failure")
		}
		return nil
	})
	eventually(t, h, "the redelivery", func() bool { return rec.count(m.ID) >= 2 })
	_ = r.stop()
	seen := rec.all()
	if seen[0].Attempt != 1 || seen[1].Attempt != 2 {
		t.Errorf("attempts = %d then %d, want 1 then 2", seen[0].Attempt, seen[1].Attempt)
	}
	if !bytes.Equal(seen[1].Body, m.Body) || seen[1].Key != m.Key || seen[1].Headers["h"] != "v" {
		t.Errorf("redelivered message differs: %+v", seen[1])
	}
	assertNotRedelivered(t, h, p, topic, "", m.ID)
}

func testPanicRedelivers(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Body: []byte("panic once")}
	publish(t, h, p, topic, m)
	rec := newRecorder()
	consume(t, h.consumer(t, opts("")), topic, func(ctx context.Context, got *broker.Message) error {
		rec.add(got)
		if got.Attempt == 1 {
			panic("handler bug")
		}
		return nil
	})
	eventually(t, h, "the redelivery after a panic", func() bool { return rec.count(m.ID) >= 2 })
	if a := rec.all()[1].Attempt; a != 2 {
		t.Errorf("Attempt after panic = %d, want 2", a)
	}
}

func testStoppedMidHandler(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Body: []byte("interrupted")}
	publish(t, h, p, topic, m)
	entered := make(chan struct{}, 1)
	first := consume(t, h.consumer(t, opts("")), topic, func(ctx context.Context, got *broker.Message) error {
		entered <- struct{}{}
		<-ctx.Done() // a long handler, cut short by shutdown
		return ctx.Err()
	})
	select {
	case <-entered:
	case <-time.After(h.timeout()):
		t.Fatal("first consumer never received the message")
	}
	if err := first.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v after its context was cancelled, want context.Canceled", err)
	}
	rec := newRecorder()
	consume(t, h.consumer(t, opts("")), topic, rec.handler)
	eventually(t, h, "the message at the next consumer", func() bool { return rec.count(m.ID) == 1 })
	if got := rec.all()[0]; !bytes.Equal(got.Body, m.Body) || got.Attempt < 1 {
		t.Errorf("redelivered message = %+v", got)
	}
}

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

func testCloseDrains(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	m := &broker.Message{Body: []byte("slow")}
	publish(t, h, p, topic, m)
	entered, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	c := h.consumer(t, opts(""))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- c.Consume(ctx, topic, func(hctx context.Context, got *broker.Message) error {
			if got.ID != m.ID {
				return nil
			}
			close(entered)
			<-release
			if hctx.Err() != nil {
				return hctx.Err()
			}
			finished.Store(true)
			return nil
		})
	}()
	select {
	case <-entered:
	case <-time.After(h.timeout()):
		t.Fatal("handler never started")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler was still running", err)
	case <-time.After(100 * time.Millisecond): // Close must still be waiting; absence can only be observed over a window
	}
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(h.timeout()):
		t.Fatal("Close did not return after the handler finished")
	}
	if err := <-consumed; err != nil {
		t.Errorf("Consume returned %v after Close, want nil", err)
	}
	if !finished.Load() {
		t.Fatal("the in-flight handler's context was cancelled before it could finish")
	}
	assertNotRedelivered(t, h, p, topic, "", m.ID)
}

func testCtxCancel(t *testing.T, h Harness) {
	topic := h.topic(t)
	c := h.consumer(t, opts(""))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, topic, func(context.Context, *broker.Message) error { return nil })
	}()
	time.Sleep(200 * time.Millisecond) // let Consume reach its receive loop
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Consume returned %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Consume took %v to return after cancel", d)
		}
	case <-time.After(h.timeout()):
		t.Fatal("Consume did not return after its context was cancelled")
	}
}

func testUseAfterClose(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	if err := p.Close(); err != nil {
		t.Fatalf("Publisher.Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Publisher.Close: %v, want nil", err)
	}
	err := p.Publish(context.Background(), topic, &broker.Message{Body: []byte("late")})
	if !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	c := h.consumer(t, opts(""))
	if err := c.Close(); err != nil {
		t.Fatalf("Consumer.Close: %v", err)
	}
	err = c.Consume(context.Background(), topic, func(context.Context, *broker.Message) error { return nil })
	if !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Consume after Close = %v, want ErrClosed", err)
	}
}

func testTooLarge(t *testing.T, h Harness) {
	if h.MaxMessageSize == 0 {
		t.Skip("Harness.MaxMessageSize not set")
	}
	topic := h.topic(t)
	p := h.publisher(t)
	big := &broker.Message{Body: bytes.Repeat([]byte("x"), h.MaxMessageSize+1)}
	small := &broker.Message{Body: []byte("fits")}
	start := time.Now()
	err := p.Publish(context.Background(), topic, small, big)
	if !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Fatalf("Publish of %d bytes = %v, want ErrMessageTooLarge", big.Size(), err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("the size check took %v: it must happen before the network", time.Since(start))
	}
	// Nothing of the refused call was sent, not even the message that fitted.
	assertNotRedelivered(t, h, p, topic, "", small.ID, big.ID)
}

func testInvalidTopic(t *testing.T, h Harness) {
	p := h.publisher(t)
	for _, topic := range []string{"", "has space", "tab\there"} {
		if err := p.Publish(context.Background(), topic, &broker.Message{}); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("Publish to %q = %v, want ErrInvalidArgument", topic, err)
		}
		c := h.consumer(t, opts(""))
		err := c.Consume(context.Background(), topic, func(context.Context, *broker.Message) error { return nil })
		if !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("Consume of %q = %v, want ErrInvalidArgument", topic, err)
		}
	}
	if err := p.Publish(context.Background(), h.topic(t), nil); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("Publish of a nil message = %v, want ErrInvalidArgument", err)
	}
	c := h.consumer(t, opts(""))
	if err := c.Consume(context.Background(), h.topic(t), nil); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("Consume with a nil handler = %v, want ErrInvalidArgument", err)
	}
}

func testStatsDepth(t *testing.T, h Harness) {
	topic := h.topic(t)
	p := h.publisher(t)
	c := h.consumer(t, opts(""))
	sr, ok := c.(broker.StatsReader)
	if !ok {
		t.Fatalf("%T does not implement broker.StatsReader: depth must be measurable on every adapter", c)
	}
	stats := func() broker.Stats {
		ctx, cancel := context.WithTimeout(context.Background(), h.timeout())
		defer cancel()
		s, err := sr.Stats(ctx, topic, "")
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		return s
	}
	publish(t, h, p, topic, numbered("s", 5)...)
	eventually(t, h, "Stats depth 5 before consuming", func() bool { return stats().Depth == 5 })
	rec := newRecorder()
	consume(t, c, topic, rec.handler)
	eventually(t, h, "5 messages", func() bool { return rec.unique() == 5 })
	eventually(t, h, "Stats depth 0 and nothing in flight after consuming", func() bool {
		s := stats()
		return s.Depth == 0 && s.InFlight <= 0
	})
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
