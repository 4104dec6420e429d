package driver

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

// instantReceiver returns ready deliveries at once and settles them for
// free: what remains is the engine's own cost per message.
type instantReceiver struct {
	buffered int
	msg      broker.Message
}

func (r *instantReceiver) Features() Features { return Features{Buffered: r.buffered} }
func (r *instantReceiver) Subscribe(context.Context, string, SubscribeConfig) (Subscription, error) {
	return r, nil
}
func (r *instantReceiver) Close() error { return nil }
func (r *instantReceiver) Receive(ctx context.Context, max int) ([]*Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ds := make([]*Delivery, max)
	for i := range ds {
		m := r.msg
		ds[i] = &Delivery{Message: &m}
	}
	return ds, nil
}
func (r *instantReceiver) Ack(context.Context, *Delivery) error { return nil }
func (r *instantReceiver) Nack(context.Context, *Delivery, time.Duration) error {
	return nil
}

// BenchmarkEngine: messages per second through the consumer engine alone,
// for the inline path (one handler, a buffering receiver) and the worker
// pool.
func BenchmarkEngine(b *testing.B) {
	for _, tc := range []struct {
		name        string
		buffered    int
		concurrency int
	}{{"inline", 256, 1}, {"workers-c1", 0, 1}, {"workers-c8", 256, 8}} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := NewConsumer("bench", &instantReceiver{buffered: tc.buffered, msg: broker.Message{ID: "x", Attempt: 1}}, nopSender{},
				broker.ConsumerOptions{Concurrency: tc.concurrency})
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			done := make(chan struct{})
			target := int64(b.N)
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				_ = c.Consume(context.Background(), "t", func(context.Context, *broker.Message) error {
					if n.Add(1) == target {
						close(done)
					}
					return nil
				})
			}()
			<-done
			b.StopTimer()
			_ = c.Close()
		})
	}
}
