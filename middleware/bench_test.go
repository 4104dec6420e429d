package middleware_test

import (
	"context"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/middleware"
)

// BenchmarkChain measures the overhead per message of Recover, Timeout and
// Retry around a handler that succeeds.
func BenchmarkChain(b *testing.B) {
	h := broker.Chain(func(ctx context.Context, m *broker.Message) error { return nil },
		middleware.Recover(), middleware.Timeout(time.Minute), middleware.Retry(middleware.RetryOptions{}))
	ctx := context.Background()
	m := &broker.Message{ID: "m"}
	b.ReportAllocs()
	for b.Loop() {
		if err := h(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}
