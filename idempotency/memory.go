package idempotency

import (
	"container/heap"
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/brokerkit/broker"
)

// sweepBatch is how many expired records each Claim removes at most, so that
// expired keys do not pile up until MaxKeys and no single call pays for many.
const sweepBatch = 16

// MemoryOptions configure a MemoryStore. The zero value is valid.
type MemoryOptions struct {
	// MaxKeys bounds the records held: live claims and Done keys. Zero means
	// 1,000,000. Negative panics.
	MaxKeys int
	// Now is the store's clock. Nil means time.Now. Tests pass a fake clock to
	// expire leases and TTLs without waiting.
	Now func() time.Time
}

// MemoryStore is a Store for one process, bounded in size. It is safe for
// concurrent use. Expired records are removed lazily by later Claims, with no
// background goroutine. When MaxKeys records are held and a new key is
// claimed, the store evicts an expired record if there is one, else the Done
// record nearest its expiry (with a single TTL, the oldest); it never evicts a
// live claim, and fails with an error wrapping broker.ErrFull when only live
// claims remain. An evicted Done key can run once more if its message comes
// back; size MaxKeys for the keys completed within one TTL.
type MemoryStore struct {
	now func() time.Time
	max int

	mu     sync.Mutex
	recs   map[string]*record
	claims expiryHeap // live or expired claims, by lease end
	done   expiryHeap // Done records, by expiry
}

var _ Store = (*MemoryStore)(nil)

// record is one key's state. It sits in exactly one of the two heaps.
type record struct {
	key     string
	token   string
	done    bool
	expires time.Time
	index   int // position in its heap
}

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
	if o.Now == nil {
		o.Now = time.Now
	}
	return &MemoryStore{now: o.Now, max: o.MaxKeys, recs: map[string]*record{}}
}

// Len returns the number of records held, including expired ones not yet
// removed.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

// Claim implements Store.
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
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweep(now, sweepBatch)
	r := s.recs[key]
	if r != nil && now.Before(r.expires) {
		if r.done {
			return Claim{Key: key, State: Done}, nil
		}
		return Claim{Key: key, State: InProgress}, nil
	}
	if r != nil { // expired: take it over
		s.remove(r)
	} else if len(s.recs) >= s.max {
		if err := s.evict(now); err != nil {
			return Claim{}, fmt.Errorf("idempotency: claim %q: %w", key, err)
		}
	}
	r = &record{key: key, token: rand.Text(), expires: now.Add(lease)}
	s.recs[key] = r
	heap.Push(&s.claims, r)
	return Claim{Key: key, Token: r.token, State: Claimed}, nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	r, err := s.owned("complete", c, now)
	if err != nil {
		return err
	}
	if r.done {
		return nil // completed by this claim already
	}
	s.remove(r)
	r.done = true
	r.expires = now.Add(ttl)
	s.recs[r.key] = r
	heap.Push(&s.done, r)
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
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.owned("release", c, s.now())
	if err != nil {
		return err
	}
	if r.done {
		return fmt.Errorf("idempotency: release %q: the key is already completed: %w", c.Key, ErrNotOwner)
	}
	s.remove(r)
	return nil
}

// checkOwned rejects claims that never owned their key.
func checkOwned(op string, c Claim) error {
	if c.Key == "" || c.State != Claimed || c.Token == "" {
		return fmt.Errorf("idempotency: %s %q: the claim is %v, not an owned Claimed one: %w", op, c.Key, c.State, broker.ErrInvalidArgument)
	}
	return nil
}

// owned returns c's record if c still holds it: same token, not expired.
func (s *MemoryStore) owned(op string, c Claim, now time.Time) (*record, error) {
	r := s.recs[c.Key]
	switch {
	case r == nil:
		return nil, fmt.Errorf("idempotency: %s %q: the key is not claimed (lease expired or released): %w", op, c.Key, ErrNotOwner)
	case r.token != c.Token:
		return nil, fmt.Errorf("idempotency: %s %q: another owner claimed the key: %w", op, c.Key, ErrNotOwner)
	case !now.Before(r.expires) && !r.done:
		return nil, fmt.Errorf("idempotency: %s %q: the lease expired at %v: %w", op, c.Key, r.expires.Format(time.RFC3339Nano), ErrNotOwner)
	case !now.Before(r.expires):
		return nil, fmt.Errorf("idempotency: %s %q: the key's Done record expired: %w", op, c.Key, ErrNotOwner)
	}
	return r, nil
}

// sweep removes up to n expired records from the front of each heap.
func (s *MemoryStore) sweep(now time.Time, n int) {
	for _, h := range []*expiryHeap{&s.claims, &s.done} {
		for i := 0; i < n && h.Len() > 0 && !now.Before((*h)[0].expires); i++ {
			s.remove((*h)[0])
		}
	}
}

// evict makes room for one record: an expired claim, else the Done record
// nearest its expiry (expired or not). Live claims are never evicted.
func (s *MemoryStore) evict(now time.Time) error {
	switch {
	case s.claims.Len() > 0 && !now.Before(s.claims[0].expires):
		s.remove(s.claims[0])
	case s.done.Len() > 0:
		s.remove(s.done[0])
	default:
		return fmt.Errorf("memory store holds %d live claims, its MaxKeys: %w", s.claims.Len(), broker.ErrFull)
	}
	return nil
}

// remove deletes r from the map and from its heap.
func (s *MemoryStore) remove(r *record) {
	if r.done {
		heap.Remove(&s.done, r.index)
	} else {
		heap.Remove(&s.claims, r.index)
	}
	delete(s.recs, r.key)
}

// expiryHeap is a min-heap of records by expiry; it implements heap.Interface.
type expiryHeap []*record

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *expiryHeap) Push(x any) {
	r := x.(*record)
	r.index = len(*h)
	*h = append(*h, r)
}

func (h *expiryHeap) Pop() any {
	old := *h
	n := len(old)
	r := old[n-1]
	old[n-1] = nil
	r.index = -1
	*h = old[:n-1]
	return r
}
