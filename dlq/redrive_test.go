package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/dlq"
)

// park dead-letters n messages published to topic, by consuming them with a
// handler that fails permanently, and returns them as published.
func park(t *testing.T, b *membroker.Broker, topic string, n int) []*broker.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := b.NewPublisher()
	var msgs []*broker.Message
	for i := range n {
		msgs = append(msgs, &broker.Message{Key: fmt.Sprint(i), Body: fmt.Appendf(nil, "order-%d", i)})
	}
	if err := p.Publish(ctx, topic, msgs...); err != nil {
		t.Fatal(err)
	}
	c, err := b.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_ = c.Consume(ctx, topic, func(context.Context, *broker.Message) error {
			return broker.Permanent(errors.New("bad payload"))
		})
	}()
	waitDepth(t, b, topic+".dlq", int64(n))
	return msgs
}

func waitDepth(t *testing.T, b *membroker.Broker, topic string, n int64) {
	t.Helper()
	c, _ := b.NewConsumer(nil)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Stats(context.Background(), topic, "")
		if err != nil {
			t.Fatal(err)
		}
		if st.Depth == n && st.InFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: depth %d in flight %d, want depth %d", topic, st.Depth, st.InFlight, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tools(t *testing.T, b *membroker.Broker) (broker.Consumer, broker.Publisher) {
	c, err := b.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := b.NewPublisher()
	t.Cleanup(func() { _ = c.Close(); _ = p.Close() })
	return c, p
}

func TestPeekLeavesMessagesParked(t *testing.T) {
	b, _ := membroker.New(nil)
	sent := park(t, b, "orders", 3)
	c, p := tools(t, b)
	got, rep, err := dlq.Peek(context.Background(), c, p, "orders.dlq", dlq.Options{Idle: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || rep.Seen != 3 || rep.Moved != 0 {
		t.Fatalf("Peek returned %d messages, report %+v; want 3 seen, 0 moved", len(got), rep)
	}
	ids := map[string]bool{}
	for _, m := range got {
		ids[m.ID] = true
		if m.Headers[dlq.HeaderReason] != "permanent: bad payload" || m.Headers[dlq.HeaderOriginalTopic] != "orders" {
			t.Errorf("peeked message headers = %v", m.Headers)
		}
	}
	for _, m := range sent {
		if !ids[m.ID] {
			t.Errorf("message %s missing from Peek", m.ID)
		}
	}
	waitDepth(t, b, "orders.dlq", 3)
}

func TestRedriveSendsSelectedMessagesBack(t *testing.T) {
	b, _ := membroker.New(nil)
	sent := park(t, b, "orders", 4)
	c, p := tools(t, b)
	pick := map[string]bool{sent[0].ID: true, sent[2].ID: true}
	rep, err := dlq.Redrive(context.Background(), c, p, "orders.dlq", dlq.Options{
		Idle:   200 * time.Millisecond,
		Filter: func(m *broker.Message) bool { return pick[m.Headers[dlq.HeaderOriginalID]] || pick[m.ID] },
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Moved != 2 || rep.Kept != 2 {
		t.Fatalf("report %+v, want 2 moved and 2 kept", rep)
	}
	waitDepth(t, b, "orders.dlq", 2)
	waitDepth(t, b, "orders", 2)

	// The redriven messages come back with their IDs, bodies and a redrive count.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	back := make(chan *broker.Message, 2)
	oc, _ := b.NewConsumer(nil)
	defer oc.Close()
	go func() {
		_ = oc.Consume(ctx, "orders", func(_ context.Context, m *broker.Message) error { back <- m; return nil })
	}()
	for range 2 {
		m := <-back
		if !pick[m.ID] {
			t.Errorf("redriven message has ID %s, want one of the picked originals", m.ID)
		}
		if m.Headers[dlq.HeaderRedriveCount] != "1" || m.Headers[dlq.HeaderReason] != "" || m.Headers[dlq.HeaderOriginalID] != "" {
			t.Errorf("redriven headers = %v", m.Headers)
		}
	}
}

func TestRedriveLimitAndDryRun(t *testing.T) {
	b, _ := membroker.New(nil)
	park(t, b, "jobs", 5)
	c, p := tools(t, b)
	rep, err := dlq.Redrive(context.Background(), c, p, "jobs.dlq", dlq.Options{DryRun: true, Idle: 200 * time.Millisecond})
	if err != nil || rep.Moved != 0 || rep.Seen != 5 {
		t.Fatalf("dry run: %+v, %v; want 5 seen, 0 moved", rep, err)
	}
	waitDepth(t, b, "jobs.dlq", 5)
	c2, p2 := tools(t, b)
	rep, err = dlq.Redrive(context.Background(), c2, p2, "jobs.dlq", dlq.Options{Limit: 2, Idle: 200 * time.Millisecond})
	if err != nil || rep.Moved != 2 {
		t.Fatalf("limit 2: %+v, %v", rep, err)
	}
	waitDepth(t, b, "jobs.dlq", 3)
	waitDepth(t, b, "jobs", 2)
}

// An empty dead-letter topic ends a run at once, whatever Idle says: the
// consumer's Stats show there is nothing to wait for.
func TestRedriveOfAnEmptyTopicReturnsAtOnce(t *testing.T) {
	b, err := membroker.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, p := tools(t, b)
	done := make(chan error, 1)
	go func() {
		rep, err := dlq.Redrive(context.Background(), c, p, "quiet.dlq", dlq.Options{Idle: time.Minute})
		if err == nil && rep != (dlq.Report{}) {
			err = fmt.Errorf("report %+v, want nothing done", rep)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Redrive of an empty dead-letter topic waited for its Idle of a minute")
	}
}
