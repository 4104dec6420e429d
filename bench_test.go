package broker_test

import (
	"context"
	"testing"

	"github.com/brokerkit/broker"
)

// BenchmarkChain measures the cost of three pass-through middleware around a
// handler: what composition itself adds per message.
func BenchmarkChain(b *testing.B) {
	pass := func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error { return next(ctx, m) }
	}
	h := broker.Chain(func(context.Context, *broker.Message) error { return nil }, pass, pass, pass)
	ctx, m := context.Background(), &broker.Message{Body: []byte("x")}
	b.ReportAllocs()
	for b.Loop() {
		_ = h(ctx, m)
	}
}

// BenchmarkNewID and BenchmarkAssignIDs: the cost of an ID made alone, and
// per message when Publish makes a batch of 100 at once.
func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = broker.NewID()
	}
}

func BenchmarkAssignIDs(b *testing.B) {
	msgs := make([]*broker.Message, 100)
	for i := range msgs {
		msgs[i] = &broker.Message{}
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			m.ID = ""
		}
		broker.AssignIDs(msgs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/id")
}
