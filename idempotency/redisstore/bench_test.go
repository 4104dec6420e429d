package redisstore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokerkit/broker/idempotency/redisstore"
)

// BenchmarkClaimComplete is what Dedupe asks of the store per message, from
// as many goroutines as a consumer has concurrent handlers: a Claim of a new
// key, then its Complete. calls/s counts both; calls/trip is how many calls
// shared a round trip on average. The Done records expire by themselves
// shortly after the run.
func BenchmarkClaimComplete(b *testing.B) {
	for _, handlers := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprint("handlers=", handlers), func(b *testing.B) {
			c := client(b)
			var trips tripCounter
			c.AddHook(&trips)
			s := redisstore.New(c, &redisstore.Options{KeyPrefix: "brokerkit-bench:" + rand.Text() + ":"})
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			for range handlers {
				wg.Go(func() {
					ctx := context.Background()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						key := strconv.FormatInt(i, 10)
						claim, err := s.Claim(ctx, key, time.Minute)
						if err != nil {
							b.Error(err)
							return
						}
						if err := s.Complete(ctx, claim, 5*time.Second); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "calls/s")
			b.ReportMetric(float64(trips.cmds.Load())/float64(trips.trips.Load()), "calls/trip")
		})
	}
}

// tripCounter is a client hook that counts round trips and the commands they
// carry.
type tripCounter struct{ trips, cmds atomic.Int64 }

func (h *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.trips.Add(1)
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (h *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.trips.Add(1)
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}
