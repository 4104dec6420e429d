package idempotency

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/brokerkit/broker"
)

// sweepBatch is how many expired records one sweep of a shard removes at most
// from each of its heaps, so that expired keys do not pile up until MaxKeys
// and no single call pays for many.
const sweepBatch = 16

// shard is a MemoryStore's records of the keys that hash to it. Its methods
// take the time on the store's clock, read before the lock.
type shard struct {
	mu     sync.Mutex
	max    int
	recs   map[string]*record
	claims expiryHeap // live or expired claims, by lease end
	done   expiryHeap // Done records, by expiry
	_      [64]byte   // keeps the next shard's lock off this one's cache line
}

// record is one key's state. It sits in exactly one of its shard's heaps.
type record struct {
	key     string
	token   uint64 // the Claim's Token is its base-36 form
	expires int64  // on the store's clock
	index   int    // position in its heap
	done    bool
}

func (s *shard) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

// claim takes key for token until expires, or says who holds it.
func (s *shard) claim(key string, token uint64, now, expires int64) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	r := s.recs[key]
	if r != nil && now < r.expires {
		if r.done {
			return Done, nil
		}
		return InProgress, nil
	}
	if r != nil { // expired: take it over
		s.heapOf(r).remove(r)
	} else {
		if len(s.recs) >= s.max {
			if err := s.evict(now); err != nil {
				return 0, err
			}
		}
		r = &record{key: key}
		s.recs[key] = r
	}
	r.token, r.done, r.expires = token, false, expires
	s.claims.push(r)
	return Claimed, nil
}

// complete marks c's key done for ttl.
func (s *shard) complete(c Claim, now int64, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.owned(c, now)
	if err != nil {
		return err
	}
	if r.done {
		return nil // completed by this claim already
	}
	s.claims.remove(r)
	r.done = true
	r.expires = after(now, ttl)
	s.done.push(r)
	return nil
}

// release deletes c's claim.
func (s *shard) release(c Claim, now int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.owned(c, now)
	if err != nil {
		return err
	}
	if r.done {
		return fmt.Errorf("the key is already completed: %w", ErrNotOwner)
	}
	s.remove(r)
	return nil
}

// owned returns c's record if c still holds it: same token, not expired.
func (s *shard) owned(c Claim, now int64) (*record, error) {
	r := s.recs[c.Key]
	var buf [16]byte
	switch {
	case r == nil:
		return nil, fmt.Errorf("the key is not claimed (lease expired or released): %w", ErrNotOwner)
	case string(strconv.AppendUint(buf[:0], r.token, 36)) != c.Token: // the exact form handed out: "0"+token is another token
		return nil, fmt.Errorf("another owner claimed the key: %w", ErrNotOwner)
	case now >= r.expires && !r.done:
		return nil, fmt.Errorf("the lease expired %v ago: %w", time.Duration(now-r.expires), ErrNotOwner)
	case now >= r.expires:
		return nil, fmt.Errorf("the key's Done record expired: %w", ErrNotOwner)
	}
	return r, nil
}

// trySweep sweeps s unless another goroutine holds its lock.
func (s *shard) trySweep(now int64) {
	if s.mu.TryLock() {
		s.sweep(now)
		s.mu.Unlock()
	}
}

// sweep removes up to sweepBatch expired records from the front of each heap.
func (s *shard) sweep(now int64) {
	for i := 0; i < sweepBatch && len(s.claims) > 0 && now >= s.claims[0].expires; i++ {
		s.remove(s.claims[0])
	}
	for i := 0; i < sweepBatch && len(s.done) > 0 && now >= s.done[0].expires; i++ {
		s.remove(s.done[0])
	}
}

// evict makes room for one record: an expired claim, else the Done record
// nearest its expiry (expired or not). Live claims are never evicted.
func (s *shard) evict(now int64) error {
	switch {
	case len(s.claims) > 0 && now >= s.claims[0].expires:
		s.remove(s.claims[0])
	case len(s.done) > 0:
		s.remove(s.done[0])
	default:
		return fmt.Errorf("the key's shard of the memory store holds %d live claims, its share of MaxKeys: %w", len(s.claims), broker.ErrFull)
	}
	return nil
}

// heapOf returns the heap r sits in.
func (s *shard) heapOf(r *record) *expiryHeap {
	if r.done {
		return &s.done
	}
	return &s.claims
}

// remove deletes r from the map and from its heap.
func (s *shard) remove(r *record) {
	s.heapOf(r).remove(r)
	delete(s.recs, r.key)
}

// expiryHeap is a binary min-heap of records by expiry, each record keeping
// its index. It is written out rather than driven by container/heap, whose
// interface calls cost more than the comparisons on this path.
type expiryHeap []*record

func (h *expiryHeap) push(r *record) {
	r.index = len(*h)
	*h = append(*h, r)
	h.up(r.index)
}

// remove takes r, which must be in h, out of h.
func (h *expiryHeap) remove(r *record) {
	i, last := r.index, len(*h)-1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	r.index = -1
	if i != last && !h.down(i) {
		h.up(i)
	}
}

func (h expiryHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h expiryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].expires <= h[i].expires {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down sifts the record at i down and reports whether it moved.
func (h expiryHeap) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		c := l
		if r := l + 1; r < len(h) && h[r].expires < h[l].expires {
			c = r
		}
		if h[i].expires <= h[c].expires {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}
