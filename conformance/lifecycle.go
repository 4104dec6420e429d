package conformance

// Cases on shutdown, cancellation, closed clients, bad input and Stats.

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

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
		checkPartitionLags(t, s)
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

// checkPartitionLags checks what an adapter reports per partition, when it
// does: partitions in order, each lag its end minus its committed offset,
// the lags summing to Lag.
func checkPartitionLags(t *testing.T, s broker.Stats) {
	t.Helper()
	if s.Partitions == nil {
		return
	}
	var sum int64
	for i, p := range s.Partitions {
		if i > 0 && p.Partition <= s.Partitions[i-1].Partition {
			t.Fatalf("Stats.Partitions out of order: %+v", s.Partitions)
		}
		if p.Lag < 0 || p.Lag != max(0, p.End-p.Committed) {
			t.Fatalf("Stats.Partitions: partition %d has lag %d, end %d, committed %d", p.Partition, p.Lag, p.End, p.Committed)
		}
		sum += p.Lag
	}
	if sum != s.Lag {
		t.Fatalf("Stats.Partitions lags sum to %d, Lag is %d: %+v", sum, s.Lag, s.Partitions)
	}
}
