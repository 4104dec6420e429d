package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/brokerkit/broker"
)

// A MemoryStore is split into up to maxShards shards by a hash of the key, each
// with its own lock and its share of MaxKeys, so that concurrent handlers
// seldom wait for each other; a shard holds at least minShardKeys of MaxKeys,
// so a small store is one shard.
const (
	maxShards    = 16
	minShardKeys = 4096
)

// MemoryOptions configure a MemoryStore. The zero value is valid.
type MemoryOptions struct {
	// MaxKeys bounds the records held: live claims and Done keys. Zero means
	// 1,000,000. Negative panics.
	MaxKeys int
	// Now is the store's clock. Nil means the process's monotonic clock, which
	// changes of the wall clock do not move. Tests pass a fake clock to expire
	// leases and TTLs without waiting.
	Now func() time.Time
}

// MemoryStore is a Store for one process, bounded in size. It is safe for
// concurrent use. Expired records are removed lazily by later Claims, with no
// background goroutine.
//
// The records are split into shards by a hash of the key (a store with a
// MaxKeys of 131,072 or more has 16), each bounded to its share of MaxKeys.
// When a new key's shard is full, it evicts an expired record if it has one,
// else its Done record nearest expiry (with a single TTL, the oldest); it
// never evicts a live claim, and the Claim fails with an error wrapping
// broker.ErrFull when the shard holds only live claims. An evicted Done key
// can run once more if its message comes back; size MaxKeys for the keys
// completed within one TTL.
//
// Its owner tokens are unique within the process (a counter from a random
// start), which is all that fencing a stale owner takes in one process.
type MemoryStore struct {
	now    func() int64 // nanoseconds on the store's clock
	seed   maphash.Seed
	shards []shard // a power of two of them
	token  atomic.Uint64
	sweep  atomic.Uint64 // the shard a Claim sweeps besides its own, in turn
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store; nil opts means the defaults. It
// panics if opts.MaxKeys is negative, a programming error.
func NewMemoryStore(opts *MemoryOptions) *MemoryStore {
	var o MemoryOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxKeys < 0 {
		panic(fmt.Sprintf("idempotency: NewMemoryStore: MemoryOptions.MaxKeys %d is negative", o.MaxKeys))
	}
	if o.MaxKeys == 0 {
		o.MaxKeys = 1_000_000
	}
	n := 1
	for n < maxShards && o.MaxKeys/(2*n) >= minShardKeys {
		n *= 2
	}
	s := &MemoryStore{seed: maphash.MakeSeed(), shards: make([]shard, n)}
	for i := range s.shards {
		s.shards[i].recs = map[string]*record{}
		s.shards[i].max = o.MaxKeys / n
		if i < o.MaxKeys%n {
			s.shards[i].max++
		}
	}
	if o.Now != nil {
		s.now = func() int64 { return o.Now().UnixNano() }
	} else {
		start := time.Now()
		s.now = func() int64 { return int64(time.Since(start)) } // reads only the monotonic clock
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	s.token.Store(binary.LittleEndian.Uint64(seed[:]))
	return s
}

// Len returns the number of records held, including expired ones not yet
// removed.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		n += s.shards[i].len()
	}
	return n
}

// shardOf returns the shard that holds key.
func (s *MemoryStore) shardOf(key string) *shard {
	if len(s.shards) == 1 {
		return &s.shards[0]
	}
	return &s.shards[maphash.String(s.seed, key)&uint64(len(s.shards)-1)]
}

// Claim implements Store. Besides the key's shard, it sweeps the expired
// records of one other shard, in turn, unless that shard is busy, so that
// every shard is swept however the keys fall.
func (s *MemoryStore) Claim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	if err := ctx.Err(); err != nil {
		return Claim{}, err
	}
	if key == "" {
		return Claim{}, fmt.Errorf("idempotency: claim: empty key: %w", broker.ErrInvalidArgument)
	}
	if lease <= 0 {
		return Claim{}, fmt.Errorf("idempotency: claim %q: lease %v is not positive: %w", key, lease, broker.ErrInvalidArgument)
	}
	token := s.token.Add(1)
	now := s.now()
	own := s.shardOf(key)
	state, err := own.claim(key, token, now, after(now, lease))
	if len(s.shards) > 1 {
		if other := &s.shards[s.sweep.Add(1)&uint64(len(s.shards)-1)]; other != own {
			other.trySweep(now)
		}
	}
	switch {
	case err != nil:
		return Claim{}, fmt.Errorf("idempotency: claim %q: %w", key, err)
	case state != Claimed:
		return Claim{Key: key, State: state}, nil
	}
	return Claim{Key: key, Token: strconv.FormatUint(token, 36), State: Claimed}, nil
}

// Complete implements Store.
func (s *MemoryStore) Complete(ctx context.Context, c Claim, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkOwned("complete", c); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("idempotency: complete %q: TTL %v is not positive: %w", c.Key, ttl, broker.ErrInvalidArgument)
	}
	if err := s.shardOf(c.Key).complete(c, s.now(), ttl); err != nil {
		return fmt.Errorf("idempotency: complete %q: %w", c.Key, err)
	}
	return nil
}

// Release implements Store.
func (s *MemoryStore) Release(ctx context.Context, c Claim) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkOwned("release", c); err != nil {
		return err
	}
	if err := s.shardOf(c.Key).release(c, s.now()); err != nil {
		return fmt.Errorf("idempotency: release %q: %w", c.Key, err)
	}
	return nil
}

// checkOwned rejects claims that never owned their key.
func checkOwned(op string, c Claim) error {
	if c.Key == "" || c.State != Claimed || c.Token == "" {
		return fmt.Errorf("idempotency: %s %q: the claim is %v, not an owned Claimed one: %w", op, c.Key, c.State, broker.ErrInvalidArgument)
	}
	return nil
}

// after is the time d after now on the store's clock, or the end of time when
// that does not fit.
func after(now int64, d time.Duration) int64 {
	if int64(d) > math.MaxInt64-now {
		return math.MaxInt64
	}
	return now + int64(d)
}
