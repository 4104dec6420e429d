package sqsbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/dlq"
)

const wait = 30 * time.Second

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run consumes topic with h until the test ends.
func run(t *testing.T, c broker.Consumer, topic string, h broker.Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Consume(ctx, topic, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Consume: %v", err)
		}
		_ = c.Close()
	})
}

func consumer(t *testing.T, b *sqsbroker.Broker, o broker.ConsumerOptions) broker.Consumer {
	t.Helper()
	c, err := b.NewConsumer(&o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func queueAttributes(t *testing.T, c *sqs.Client, topic string) map[string]string {
	t.Helper()
	ctx := context.Background()
	name, _, err := sqsbroker.QueueName(topic)
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		t.Fatalf("queue %q of topic %q: %v", name, topic, err)
	}
	out, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: u.QueueUrl, AttributeNames: []types.QueueAttributeName{"All"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Attributes
}

func TestMissingQueueIsNotFound(t *testing.T) {
	b, _ := newBroker(t, nil)
	topic := conformance.RandomName("missing")
	p := b.NewPublisher()
	defer p.Close()
	err := p.Publish(context.Background(), topic, &broker.Message{Body: []byte("x")})
	var nf *types.QueueDoesNotExist
	if !errors.Is(err, broker.ErrNotFound) || !errors.As(err, &nf) {
		t.Errorf("Publish to a missing queue = %v, want ErrNotFound and *types.QueueDoesNotExist", err)
	}
	c := consumer(t, b, broker.ConsumerOptions{})
	defer c.Close()
	err = c.Consume(context.Background(), topic, func(context.Context, *broker.Message) error { return nil })
	if !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Consume of a missing queue = %v, want ErrNotFound", err)
	}
}

func TestCreateQueuesOption(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			b, c := newBroker(t, &sqsbroker.Options{CreateQueues: true})
			topic := conformance.RandomName("create")
			if fifo {
				topic += ".fifo"
			}
			t.Cleanup(func() { deleteQueues(c, topic, topic+".dlq") })
			p := b.NewPublisher()
			defer p.Close()
			if err := p.Publish(context.Background(), topic, &broker.Message{Key: "k", Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			attrs := queueAttributes(t, c, topic)
			dlqAttrs := queueAttributes(t, c, topic+".dlq")
			var policy struct {
				DeadLetterTargetArn string `json:"deadLetterTargetArn"`
				MaxReceiveCount     any    `json:"maxReceiveCount"`
			}
			if err := json.Unmarshal([]byte(attrs["RedrivePolicy"]), &policy); err != nil {
				t.Fatalf("RedrivePolicy %q: %v", attrs["RedrivePolicy"], err)
			}
			if policy.DeadLetterTargetArn != dlqAttrs["QueueArn"] || fmt.Sprint(policy.MaxReceiveCount) != "20" {
				t.Errorf("RedrivePolicy = %+v, want the DLQ %s and 20 receives", policy, dlqAttrs["QueueArn"])
			}
			if dlqAttrs["RedrivePolicy"] != "" {
				t.Errorf("dead-letter queue attributes: %v", dlqAttrs)
			}
			if fifo && (attrs["FifoQueue"] != "true" || dlqAttrs["FifoQueue"] != "true" || attrs["ContentBasedDeduplication"] != "false") {
				t.Errorf("FIFO attributes: %v / %v", attrs, dlqAttrs)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			s, err := p.Stats(ctx, topic, "")
			if err != nil || s.Depth != 1 || s.DeadLetters != 0 || s.Consumers != -1 {
				t.Errorf("Stats = %+v, %v; want depth 1, no dead letters", s, err)
			}
		})
	}
}

// A handler that runs past the visibility timeout keeps its message: the
// consumer extends the timeout, so a competing consumer does not get it.
func TestVisibilityExtendedForLongHandlers(t *testing.T) {
	b, c := newBroker(t, &sqsbroker.Options{VisibilityTimeout: 2 * time.Second, WaitTime: time.Second})
	topic := newTopic(t, b, c, false)
	p := b.NewPublisher()
	defer p.Close()
	m := &broker.Message{Body: []byte("slow")}
	if err := p.Publish(context.Background(), topic, m); err != nil {
		t.Fatal(err)
	}
	var deliveries atomic.Int64
	var finished atomic.Bool
	h := func(ctx context.Context, got *broker.Message) error {
		if deliveries.Add(1) == 1 {
			time.Sleep(5 * time.Second) // two and a half visibility timeouts
			finished.Store(true)
		}
		return nil
	}
	run(t, consumer(t, b, broker.ConsumerOptions{}), topic, h)
	run(t, consumer(t, b, broker.ConsumerOptions{}), topic, h)
	waitFor(t, "the slow handler to finish", finished.Load)
	waitFor(t, "the message to be deleted", func() bool {
		a := queueAttributes(t, c, topic)
		return a["ApproximateNumberOfMessages"] == "0" && a["ApproximateNumberOfMessagesNotVisible"] == "0"
	})
	if n := deliveries.Load(); n != 1 {
		t.Errorf("the message was delivered %d times while its handler ran, want 1", n)
	}
}

// A failed message comes back after the backoff delay, not at once.
func TestNackDelaysRedelivery(t *testing.T) {
	b, c := newBroker(t, nil)
	topic := newTopic(t, b, c, false)
	p := b.NewPublisher()
	defer p.Close()
	if err := p.Publish(context.Background(), topic, &broker.Message{Body: []byte("retry me")}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var times []time.Time
	run(t, consumer(t, b, broker.ConsumerOptions{Backoff: broker.ConstantBackoff(2 * time.Second)}), topic,
		func(ctx context.Context, m *broker.Message) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			if m.Attempt == 1 {
				return errors.New("later")
			}
			return nil
		})
	waitFor(t, "the redelivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(times) >= 2 })
	mu.Lock()
	defer mu.Unlock()
	if d := times[1].Sub(times[0]); d < 2*time.Second {
		t.Errorf("redelivered after %v, want at least the 2s backoff", d)
	}
}

// FIFO queues drop a message whose ID was sent in the last 5 minutes, but not
// a copy that dlq.Redrive sends back.
func TestFIFODeduplication(t *testing.T) {
	b, c := newBroker(t, nil)
	topic := newTopic(t, b, c, true)
	p := b.NewPublisher()
	defer p.Close()
	ctx := context.Background()
	first := &broker.Message{ID: conformance.RandomName("dup"), Key: "k", Body: []byte("once")}
	again := first.Clone()
	marker := &broker.Message{Key: "k", Body: []byte("marker")}
	for _, m := range []*broker.Message{first, again, marker} {
		if err := p.Publish(ctx, topic, m); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	count := func(id string) int { mu.Lock(); defer mu.Unlock(); return seen[id] }
	var poison atomic.Bool
	poison.Store(true)
	run(t, consumer(t, b, broker.ConsumerOptions{MaxAttempts: 1}), topic, func(ctx context.Context, m *broker.Message) error {
		mu.Lock()
		seen[m.ID]++
		mu.Unlock()
		if m.ID == first.ID && poison.Load() {
			return broker.Permanent(errors.New("park it"))
		}
		return nil
	})
	waitFor(t, "the marker", func() bool { return count(marker.ID) > 0 })
	if n := count(first.ID); n != 1 {
		t.Fatalf("a message published twice with one ID was delivered %d times on a FIFO queue, want 1", n)
	}
	// Redrive it from the dead-letter topic at once, well within the 5 minutes.
	poison.Store(false)
	dc := consumer(t, b, broker.ConsumerOptions{})
	rep, err := dlq.Redrive(ctx, dc, p, topic+".dlq", dlq.Options{Idle: 3 * time.Second})
	if err != nil || rep.Moved != 1 {
		t.Fatalf("Redrive = %+v, %v; want 1 moved", rep, err)
	}
	waitFor(t, "the redriven message", func() bool { return count(first.ID) == 2 })
}

// Headers beyond what SQS attributes carry, and a binary body, survive.
func TestEnvelopeOnTheWire(t *testing.T) {
	b, c := newBroker(t, nil)
	topic := newTopic(t, b, c, false)
	p := b.NewPublisher()
	defer p.Close()
	h := map[string]string{"x:colon": "1", "empty": ""}
	for i := range 12 {
		h[fmt.Sprint("h", i)] = fmt.Sprint(i)
	}
	m := &broker.Message{Body: []byte{0, 1, 2, 0xff}, Headers: h}
	if err := p.Publish(context.Background(), topic, m); err != nil {
		t.Fatal(err)
	}
	got := make(chan *broker.Message, 1)
	run(t, consumer(t, b, broker.ConsumerOptions{}), topic, func(ctx context.Context, m *broker.Message) error {
		got <- m
		return nil
	})
	select {
	case r := <-got:
		if string(r.Body) != string(m.Body) || len(r.Headers) != len(h) {
			t.Errorf("got body %x and %d headers, want %x and %d", r.Body, len(r.Headers), m.Body, len(h))
		}
		for k, v := range h {
			if r.Headers[k] != v {
				t.Errorf("header %q = %q, want %q", k, r.Headers[k], v)
			}
		}
		var native types.Message
		if !r.As(&native) || native.ReceiptHandle == nil {
			t.Error("As(*types.Message) failed")
		}
	case <-time.After(wait):
		t.Fatal("message not received")
	}
}
