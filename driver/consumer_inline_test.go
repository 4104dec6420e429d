package driver

import (
	"context"
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
	r := &bufferedReceiver{}
	c, err := NewConsumer("test", r, nopSender{}, broker.ConsumerOptions{Concurrency: 1, DrainTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	cancelled := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(context.Background(), "t", func(ctx context.Context, _ *broker.Message) error {
			once.Do(func() { close(started) })
			<-ctx.Done()
			close(cancelled)
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
}
