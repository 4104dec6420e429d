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
