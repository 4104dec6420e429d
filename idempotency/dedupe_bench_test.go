package idempotency_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// BenchmarkDedupe is the cost of Dedupe around a handler that does nothing,
// on the memory store, from as many goroutines as GOMAXPROCS: each message
// has a new key, so each costs a Claim and a Complete. It is what a consumer
// pays per message beyond the broker, and what to profile
// (go test -run '^$' -bench Dedupe -cpuprofile cpu.out ./idempotency/).
func BenchmarkDedupe(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts *idempotency.DedupeOptions
	}{
		{"none", nil}, // the handler alone, and the loop's own cost
		{"default", nil},
		{"namespace", &idempotency.DedupeOptions{Namespace: "billing"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := func(context.Context, *broker.Message) error { return nil }
			if bc.name != "none" {
				h = idempotency.Dedupe(idempotency.NewMemoryStore(nil), bc.opts)(h)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					m := &broker.Message{ID: "m-" + strconv.FormatInt(next.Add(1), 10)}
					if err := h(ctx, m); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
