package redisstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/redisstore"
	"github.com/brokerkit/broker/idempotency/storetest"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// client connects to the test server and closes the client after t.
func client(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newStore returns a store under a prefix of its own, whose keys are deleted
// after t.
func newStore(t *testing.T, c *redis.Client) *redisstore.Store {
	t.Helper()
	return newStoreWith(t, c, redisstore.Options{})
}

// newStoreWith is newStore with the options o, whose KeyPrefix it sets.
func newStoreWith(t *testing.T, c *redis.Client, o redisstore.Options) *redisstore.Store {
	t.Helper()
	prefix := "brokerkit-test:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	o.KeyPrefix = prefix
	return redisstore.New(c, &o)
}

func TestStore(t *testing.T) {
	c := client(t)
	for _, inFlight := range []int{1, 0} {
		t.Run(fmt.Sprint("MaxInFlight=", inFlight), func(t *testing.T) {
			storetest.Run(t, storetest.Harness{
				NewStore: func(t *testing.T, _ func() time.Time) idempotency.Store {
					return newStoreWith(t, c, redisstore.Options{MaxInFlight: inFlight})
				},
				ServerClock: true,
			})
		})
	}
}

// The records are the documented Redis strings, under the prefix, with the
// lease or the TTL as their expiry.
func TestRecords(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	prefix := "brokerkit-test:" + rand.Text() + ":"
	s := redisstore.New(c, &redisstore.Options{KeyPrefix: prefix})
	t.Cleanup(func() { c.Del(ctx, prefix+"order-1") })

	claim, err := s.Claim(ctx, "order-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, prefix+"order-1").Val(); v != "claimed:"+claim.Token {
		t.Fatalf("claimed record = %q, want %q", v, "claimed:"+claim.Token)
	}
	if ttl := c.PTTL(ctx, prefix+"order-1").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("claimed record expires in %v, want the one-minute lease", ttl)
	}
	if err := s.Complete(ctx, claim, time.Hour); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, prefix+"order-1").Val(); v != "done:"+claim.Token {
		t.Fatalf("done record = %q, want %q", v, "done:"+claim.Token)
	}
	if ttl := c.PTTL(ctx, prefix+"order-1").Val(); ttl <= time.Minute || ttl > time.Hour {
		t.Fatalf("done record expires in %v, want the one-hour TTL", ttl)
	}
}

// unreachable returns a client of a port where nothing listens, which tries
// each dial once.
func unreachable() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
}

// A store that cannot be reached returns an error, never a Claim state.
func TestOutage(t *testing.T) {
	closed := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	_ = closed.Close()
	for _, tc := range []struct {
		name   string
		client *redis.Client
		want   error
	}{
		{"closed port", unreachable(), broker.ErrUnavailable},
		{"closed client", closed, broker.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.client.Close()
			s := redisstore.New(tc.client, nil)
			ctx := context.Background()
			c, err := s.Claim(ctx, "order-1", time.Minute)
			if !errors.Is(err, tc.want) || c.State != 0 {
				t.Fatalf("Claim = %v, %v; want no state and an error wrapping %v", c.State, err, tc.want)
			}
			owned := idempotency.Claim{Key: "order-1", Token: "t", State: idempotency.Claimed}
			if err := s.Complete(ctx, owned, time.Hour); !errors.Is(err, tc.want) {
				t.Errorf("Complete = %v, want an error wrapping %v", err, tc.want)
			}
			if err := s.Release(ctx, owned); !errors.Is(err, tc.want) {
				t.Errorf("Release = %v, want an error wrapping %v", err, tc.want)
			}
			if broker.IsPermanent(err) {
				t.Errorf("the outage error %v is marked permanent", err)
			}
		})
	}
}

// Dedupe over a store that cannot be reached does not run the handler.
func TestDedupeOutage(t *testing.T) {
	down := unreachable()
	defer down.Close()
	ran := false
	h := idempotency.Dedupe(redisstore.New(down, nil), nil)(func(context.Context, *broker.Message) error {
		ran = true
		return nil
	})
	err := h(context.Background(), &broker.Message{ID: "order-1"})
	if err == nil || ran || !broker.IsRetryable(err) {
		t.Fatalf("handler ran: %v, error %v; want a retryable error and no run", ran, err)
	}
}
