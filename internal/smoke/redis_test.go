package smoke

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokerkit/broker/internal/testenv"
)

// TestRedisSetNX checks SET NX PX, the primitive of the Redis idempotency store:
// the first claim wins, a second one does not, and the key expires.
func TestRedisSetNX(t *testing.T) {
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatalf("parse %s: %v", testenv.EnvRedisURL, err)
	}
	ctx := deadline(t, 20*time.Second)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })

	key := uniqueName(t)
	t.Cleanup(func() { rdb.Del(deadline(t, 5*time.Second), key) })

	won, err := rdb.SetNX(ctx, key, "worker-1", 30*time.Second).Result()
	if err != nil {
		t.Fatalf("SET NX: %v", err)
	}
	if !won {
		t.Fatalf("first SET NX on %s lost", key)
	}
	won, err = rdb.SetNX(ctx, key, "worker-2", 30*time.Second).Result()
	if err != nil {
		t.Fatalf("second SET NX: %v", err)
	}
	if won {
		t.Errorf("second SET NX on %s won", key)
	}
	if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "worker-1" {
		t.Errorf("GET = %q, %v; want worker-1", v, err)
	}
	if ttl, err := rdb.PTTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > 30*time.Second {
		t.Errorf("PTTL = %v, %v; want in (0, 30s]", ttl, err)
	}
}
