package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
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
