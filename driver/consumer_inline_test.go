package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

// bufferedReceiver hands out the same message forever, as a receiver that
// fetched ahead would, and records how each delivery was settled.
type bufferedReceiver struct {
	mu     sync.Mutex
	acked  int
	nacked int
}

func (r *bufferedReceiver) Features() Features { return Features{Buffered: 8} }
func (r *bufferedReceiver) Subscribe(context.Context, string, SubscribeConfig) (Subscription, error) {
	return r, nil
}
func (r *bufferedReceiver) Close() error { return nil }
func (r *bufferedReceiver) Receive(ctx context.Context, max int) ([]*Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ds := make([]*Delivery, max)
	for i := range ds {
		ds[i] = &Delivery{Message: &broker.Message{ID: "m", Attempt: 1}}
	}
	return ds, nil
}
func (r *bufferedReceiver) Ack(context.Context, *Delivery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acked++
	return nil
}
func (r *bufferedReceiver) Nack(context.Context, *Delivery, time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nacked++
	return nil
}

type nopSender struct{}

func (nopSender) Send(context.Context, string, []*broker.Message) error { return nil }
func (nopSender) MaxMessageSize() int                                   { return 0 }
func (nopSender) Close() error                                          { return nil }

// With one handler and a receiver that buffers, the handler runs in the fetch
// loop; Close must still cancel a handler stuck past the drain timeout, and
// hand back every delivery it did not finish.
func TestInlineHandlerIsCancelledAfterDrainTimeout(t *testing.T) {
	// The same bound holds for handlers on worker goroutines (Concurrency 2).
	for _, concurrency := range []int{1, 2} {
		t.Run(fmt.Sprintf("concurrency-%d", concurrency), func(t *testing.T) {
			r := &bufferedReceiver{}
			c, err := NewConsumer("test", r, nopSender{}, broker.ConsumerOptions{Concurrency: concurrency, DrainTimeout: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			started := make(chan struct{})
			cancelled := make(chan struct{})
			var startOnce, cancelOnce sync.Once
			done := make(chan error, 1)
			go func() {
				done <- c.Consume(context.Background(), "t", func(ctx context.Context, _ *broker.Message) error {
					startOnce.Do(func() { close(started) })
					<-ctx.Done()
					cancelOnce.Do(func() { close(cancelled) })
					return ctx.Err()
				})
			}()
			<-started
			closed := make(chan error, 1)
			go func() { closed <- c.Close() }()
			select {
			case <-cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("the stuck handler was not cancelled after the drain timeout")
			}
			if err := <-closed; err != nil {
				t.Fatalf("Close = %v", err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Consume = %v, want nil after Close", err)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.acked != 0 || r.nacked != 8 {
				t.Fatalf("acked %d, nacked %d; want 0 acked and all 8 held deliveries handed back", r.acked, r.nacked)
			}
		})
	}
}

// unreachableReceiver fails to subscribe with ErrUnavailable a few times, as
// a broker that is still starting does.
type unreachableReceiver struct {
	bufferedReceiver
	failures int
	tries    int
}

func (r *unreachableReceiver) Subscribe(context.Context, string, SubscribeConfig) (Subscription, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	if r.tries <= r.failures {
		return nil, fmt.Errorf("dial: connection refused: %w", broker.ErrUnavailable)
	}
	return r, nil
}

// A consumer started before its broker waits for it instead of failing.
func TestConsumeWaitsForAnUnavailableBroker(t *testing.T) {
	r := &unreachableReceiver{failures: 2}
	c, err := NewConsumer("test", r, nopSender{}, broker.ConsumerOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	var once sync.Once
	go func() {
		_ = c.Consume(context.Background(), "t", func(context.Context, *broker.Message) error {
			once.Do(func() { close(got) })
			return nil
		})
	}()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no message handled: Consume gave up on a broker that came up")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if r.tries != 3 {
		t.Errorf("subscribed %d times, want 3 (2 failures, then success)", r.tries)
	}

	// Close while it waits: Consume returns nil, and promptly.
	r2 := &unreachableReceiver{failures: 1 << 30}
	c2, _ := NewConsumer("test", r2, nopSender{}, broker.ConsumerOptions{Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() {
		done <- c2.Consume(context.Background(), "t", func(context.Context, *broker.Message) error { return nil })
	}()
	time.Sleep(50 * time.Millisecond)
	_ = c2.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Consume closed while waiting for the broker = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop a Consume waiting for the broker")
	}

	// Any other error is returned at once.
	r3 := &badReceiver{}
	c3, _ := NewConsumer("test", r3, nopSender{}, broker.ConsumerOptions{})
	if err := c3.Consume(context.Background(), "t", func(context.Context, *broker.Message) error { return nil }); !errors.Is(err, broker.ErrPermissionDenied) {
		t.Errorf("Consume with a refused subscription = %v, want ErrPermissionDenied", err)
	}
}

type badReceiver struct{ bufferedReceiver }

func (*badReceiver) Subscribe(context.Context, string, SubscribeConfig) (Subscription, error) {
	return nil, broker.ErrPermissionDenied
}
