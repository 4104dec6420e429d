package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/idempotency"
)

// End to end on the in-memory broker: 200 messages, each published twice,
// consumed with 8 workers through Dedupe: 200 side effects, nothing
// dead-lettered. The copies come either long after the originals (a producer
// retry much later) or right behind them, so that both copies are handled at
// the same time by two workers.
func TestDedupeOnMem(t *testing.T) {
	for _, adjacent := range []bool{false, true} {
		name := map[bool]string{false: "duplicates later", true: "duplicates adjacent"}[adjacent]
		t.Run(name, func(t *testing.T) { testDedupeOnMem(t, adjacent) })
	}
}

func testDedupeOnMem(t *testing.T, adjacent bool) {
	const n = 200
	b, err := membroker.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := b.NewPublisher()
	defer pub.Close()
	sub, err := b.NewConsumer(&broker.ConsumerOptions{
		Concurrency: 8,
		MaxAttempts: 50, // a copy refused with ErrInProgress comes back; never exhaust attempts on that
		Backoff:     broker.ExponentialBackoff(time.Millisecond, 5*time.Millisecond),
		Logger:      quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var originals, published []*broker.Message
	for i := range n {
		m := &broker.Message{ID: fmt.Sprintf("order-%03d", i), Body: []byte("confirmed")}
		originals = append(originals, m)
		if adjacent {
			published = append(published, m, m.Clone())
		}
	}
	if !adjacent {
		for _, m := range originals {
			published = append(published, m)
		}
		for _, m := range originals {
			published = append(published, m.Clone())
		}
	}
	for _, m := range published {
		if err := pub.Publish(ctx, "orders", m); err != nil {
			t.Fatal(err)
		}
	}

	fx := newEffects(nil)
	var acked, inProgress atomic.Int32
	outcome := func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error {
			err := next(ctx, m)
			switch {
			case err == nil:
				acked.Add(1)
			case errors.Is(err, idempotency.ErrInProgress):
				inProgress.Add(1)
			}
			return err
		}
	}
	sendEmail := func(ctx context.Context, m *broker.Message) error {
		time.Sleep(200 * time.Microsecond) // the side effect takes a moment, so that adjacent copies overlap
		return fx.handle(ctx, m)
	}
	h := broker.Chain(sendEmail, outcome, idempotency.Dedupe(idempotency.NewMemoryStore(nil), &idempotency.DedupeOptions{Logger: quiet()}))
	consumed := make(chan error, 1)
	go func() { consumed <- sub.Consume(ctx, "orders", h) }()

	deadline := time.Now().Add(20 * time.Second)
	for acked.Load() < 2*n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d deliveries acknowledged", acked.Load(), 2*n)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter, bounded by the deadline
	}
	cancel()
	<-consumed
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range originals {
		if c := fx.count(m.ID); c != 1 {
			t.Errorf("%s: side effect ran %d times, want 1", m.ID, c)
		}
	}
	st, err := sub.Stats(context.Background(), "orders", "")
	if err != nil {
		t.Fatal(err)
	}
	if st.DeadLetters != 0 || st.Depth != 0 || st.InFlight != 0 {
		t.Errorf("stats after the run: %+v, want nothing waiting and nothing dead-lettered", st)
	}
	t.Logf("%d deliveries acknowledged, %d refused with ErrInProgress and redelivered", acked.Load(), inProgress.Load())
}
