package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T, now func() time.Time) idempotency.Store {
			return idempotency.NewMemoryStore(&idempotency.MemoryOptions{Now: now})
		},
	})
}

// fakeClock is a clock for the store that tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func mustClaim(t *testing.T, s idempotency.Store, key string, lease time.Duration) idempotency.Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), key, lease)
	if err != nil {
		t.Fatalf("Claim(%q): %v", key, err)
	}
	return c
}

func mustComplete(t *testing.T, s idempotency.Store, c idempotency.Claim, ttl time.Duration) {
	t.Helper()
	if err := s.Complete(context.Background(), c, ttl); err != nil {
		t.Fatalf("Complete(%q): %v", c.Key, err)
	}
}

func wantState(t *testing.T, s idempotency.Store, key string, want idempotency.State) {
	t.Helper()
	if c := mustClaim(t, s, key, time.Hour); c.State != want {
		t.Fatalf("Claim(%q) = %v, want %v", key, c.State, want)
	}
}

func TestMemoryStoreEvictsExpiredFirst(t *testing.T) {
	clock := newFakeClock()
	s := idempotency.NewMemoryStore(&idempotency.MemoryOptions{MaxKeys: 3, Now: clock.Now})
	mustClaim(t, s, "crashed", time.Second) // its worker died: the lease will expire
	mustComplete(t, s, mustClaim(t, s, "done", time.Minute), time.Hour)
	mustClaim(t, s, "live", time.Hour)
	clock.Advance(2 * time.Second)

	// Full: the expired claim goes first, the Done record stays.
	if c := mustClaim(t, s, "new-1", time.Hour); c.State != idempotency.Claimed {
		t.Fatalf("Claim in a full store = %v, want Claimed", c.State)
	}
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s.Len())
	}
	wantState(t, s, "done", idempotency.Done)
	wantState(t, s, "live", idempotency.InProgress)
}

func TestMemoryStoreEvictsOldestDoneThenFails(t *testing.T) {
	clock := newFakeClock()
	s := idempotency.NewMemoryStore(&idempotency.MemoryOptions{MaxKeys: 4, Now: clock.Now})
	mustComplete(t, s, mustClaim(t, s, "done-old", time.Minute), time.Hour)
	clock.Advance(time.Second)
	mustComplete(t, s, mustClaim(t, s, "done-new", time.Minute), time.Hour)
	mustClaim(t, s, "live-1", time.Hour)
	mustClaim(t, s, "live-2", time.Hour)

	mustClaim(t, s, "live-3", time.Hour) // evicts done-old
	wantState(t, s, "done-new", idempotency.Done)
	mustClaim(t, s, "live-4", time.Hour) // evicts done-new
	wantState(t, s, "live-1", idempotency.InProgress)

	// Only live claims remain: refuse rather than evict one.
	_, err := s.Claim(context.Background(), "live-5", time.Hour)
	if !errors.Is(err, broker.ErrFull) {
		t.Fatalf("Claim in a store full of live claims = %v, want an error wrapping broker.ErrFull", err)
	}
	for _, k := range []string{"live-1", "live-2", "live-3", "live-4"} {
		wantState(t, s, k, idempotency.InProgress)
	}
	// done-old was evicted, so it can be claimed again once there is room.
	clock.Advance(2 * time.Hour)
	wantState(t, s, "done-old", idempotency.Claimed)
}

// Expired records are removed as the store is used, so it stays as small as
// its live records without reaching MaxKeys.
func TestMemoryStoreSweepsExpired(t *testing.T) {
	clock := newFakeClock()
	s := idempotency.NewMemoryStore(&idempotency.MemoryOptions{Now: clock.Now})
	for i := range 1000 {
		c := mustClaim(t, s, fmt.Sprint("done-", i), time.Minute)
		mustComplete(t, s, c, time.Hour)
		mustClaim(t, s, fmt.Sprint("crashed-", i), time.Minute)
	}
	if s.Len() != 2000 {
		t.Fatalf("Len = %d, want 2000", s.Len())
	}
	clock.Advance(2 * time.Hour)
	for i := range 100 {
		mustClaim(t, s, fmt.Sprint("new-", i), time.Hour)
	}
	if s.Len() != 100 {
		t.Fatalf("after the records expired and 100 new claims, Len = %d, want 100", s.Len())
	}
}

// A store large enough to be sharded still holds at most MaxKeys records.
func TestMemoryStoreStaysWithinMaxKeys(t *testing.T) {
	const maxKeys = 4 * 4096 // four shards
	s := idempotency.NewMemoryStore(&idempotency.MemoryOptions{MaxKeys: maxKeys})
	for i := range 3 * maxKeys {
		mustComplete(t, s, mustClaim(t, s, fmt.Sprint("k", i), time.Hour), time.Hour)
		if i%1000 == 0 && s.Len() > maxKeys {
			t.Fatalf("after %d keys, Len = %d, over MaxKeys %d", i+1, s.Len(), maxKeys)
		}
	}
	if s.Len() > maxKeys {
		t.Fatalf("Len = %d, over MaxKeys %d", s.Len(), maxKeys)
	}
	wantState(t, s, fmt.Sprint("k", 3*maxKeys-1), idempotency.Done) // the newest are kept
}

// A lease or TTL too long to add to the clock lasts forever instead of
// wrapping around into the past.
func TestMemoryStoreEndlessDurations(t *testing.T) {
	clock := newFakeClock()
	s := idempotency.NewMemoryStore(&idempotency.MemoryOptions{Now: clock.Now})
	endless := time.Duration(math.MaxInt64)
	mustComplete(t, s, mustClaim(t, s, "done", endless), endless)
	mustClaim(t, s, "held", endless)
	clock.Advance(100 * 365 * 24 * time.Hour)
	wantState(t, s, "done", idempotency.Done)
	wantState(t, s, "held", idempotency.InProgress)
}

func TestMemoryStoreNegativeMaxKeysPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewMemoryStore with MaxKeys -1 did not panic")
		}
	}()
	idempotency.NewMemoryStore(&idempotency.MemoryOptions{MaxKeys: -1})
}

func TestStateString(t *testing.T) {
	for s, want := range map[idempotency.State]string{
		idempotency.Claimed: "Claimed", idempotency.InProgress: "InProgress", idempotency.Done: "Done", 0: "State(0)",
	} {
		if s.String() != want {
			t.Errorf("State(%d).String() = %q, want %q", uint8(s), s.String(), want)
		}
	}
}
