// Package storetest is the suite that every idempotency.Store must pass, so
// that the memory, Redis and SQL stores give Dedupe one meaning. A backend's
// test is a few lines:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			NewStore: func(t *testing.T, now func() time.Time) idempotency.Store {
//				return idempotency.NewMemoryStore(&idempotency.MemoryOptions{Now: now})
//			},
//		})
//	}
//
// It uses only the standard testing package.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// Harness is what the suite needs of a backend.
type Harness struct {
	// NewStore returns a new, empty Store for one case. A store that can take
	// a clock must read the time from now, which the suite moves forward to
	// expire leases and TTLs without waiting. Cleanup goes in t.Cleanup.
	NewStore func(t *testing.T, now func() time.Time) idempotency.Store
	// ServerClock says that the store measures leases and TTLs on its own clock
	// (a Redis server's PX, a database's now()) and ignores now. The suite then
	// uses short real durations and lets them pass, so these cases take a few
	// seconds.
	ServerClock bool
}

// Run runs every case of the suite as a subtest of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.NewStore == nil {
		t.Fatal("storetest: Harness.NewStore is nil")
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		t.Run(name, func(t *testing.T) {
			clock := newClock()
			e := &env{t: t, clock: clock, server: h.ServerClock}
			e.store = h.NewStore(t, clock.Now)
			cases[name](e)
		})
	}
}

// cases are the suite's subtests by name.
var cases = map[string]func(e *env){
	"ClaimIsExclusive":           claimIsExclusive,
	"ClaimStates":                claimStates,
	"KeysAreIndependent":         keysAreIndependent,
	"KeysAreOpaque":              keysAreOpaque,
	"LeaseExpiryFreesKey":        leaseExpiryFreesKey,
	"StaleOwnerIsRefused":        staleOwnerIsRefused,
	"ExpiredOwnerIsRefused":      expiredOwnerIsRefused,
	"ForgedTokenIsRefused":       forgedTokenIsRefused,
	"DoneOutlivesLease":          doneOutlivesLease,
	"TTLExpiryForgetsDone":       ttlExpiryForgetsDone,
	"ReleaseFreesKeyAtOnce":      releaseFreesKeyAtOnce,
	"ReleaseTwiceIsRefused":      releaseTwiceIsRefused,
	"ReleaseAfterComplete":       releaseAfterComplete,
	"CompleteTwiceIsHarmless":    completeTwiceIsHarmless,
	"TokensAreUnique":            tokensAreUnique,
	"InvalidArguments":           invalidArguments,
	"EndedContextChangesNothing": endedContextChangesNothing,
	"ExactlyOnceUnderContention": exactlyOnceUnderContention,
}

// long never expires within a case.
const long = time.Hour

// env is one case's store and clock.
type env struct {
	t      *testing.T
	store  idempotency.Store
	clock  *clock
	server bool
}

// short is a lease or TTL that a case lets expire.
func (e *env) short() time.Duration {
	if e.server {
		return 300 * time.Millisecond
	}
	return time.Minute
}

// pass lets d (and a little more) go by on the store's clock.
func (e *env) pass(d time.Duration) {
	if !e.server {
		e.clock.Advance(d + time.Millisecond)
		return
	}
	time.Sleep(d + 100*time.Millisecond) // waiting for time itself on the server's clock
}

// eventually calls f until it returns true: once on the suite's clock, and
// every 20ms for up to 10s on a server clock, whose expiry may lag.
func (e *env) eventually(what string, f func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if !e.server || time.Now().After(deadline) {
			e.t.Fatalf("never saw: %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

func (e *env) claim(key string, lease time.Duration) idempotency.Claim {
	e.t.Helper()
	c, err := e.store.Claim(context.Background(), key, lease)
	if err != nil {
		e.t.Fatalf("Claim(%q, %v): %v", key, lease, err)
	}
	if c.Key != key {
		e.t.Fatalf("Claim(%q) returned a Claim with Key %q", key, c.Key)
	}
	switch {
	case c.State == idempotency.Claimed && c.Token == "":
		e.t.Fatalf("Claim(%q) is Claimed with an empty Token", key)
	case c.State != idempotency.Claimed && c.Token != "":
		e.t.Fatalf("Claim(%q) is %v but carries Token %q", key, c.State, c.Token)
	}
	return c
}

// want claims key with a long lease and checks the state.
func (e *env) want(key string, want idempotency.State) idempotency.Claim {
	e.t.Helper()
	c := e.claim(key, long)
	if c.State != want {
		e.t.Fatalf("Claim(%q) = %v, want %v", key, c.State, want)
	}
	return c
}

func (e *env) complete(c idempotency.Claim, ttl time.Duration) {
	e.t.Helper()
	if err := e.store.Complete(context.Background(), c, ttl); err != nil {
		e.t.Fatalf("Complete(%q) by its owner: %v", c.Key, err)
	}
}

func (e *env) release(c idempotency.Claim) {
	e.t.Helper()
	if err := e.store.Release(context.Background(), c); err != nil {
		e.t.Fatalf("Release(%q) by its owner: %v", c.Key, err)
	}
}

func (e *env) wantErr(what string, err, target error) {
	e.t.Helper()
	if !errors.Is(err, target) {
		e.t.Errorf("%s returned %v, want an error wrapping %v", what, err, target)
	}
}

// claimIsExclusive: of 50 concurrent Claims of one key, exactly one wins.
func claimIsExclusive(e *env) {
	const n = 50
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]idempotency.Claim, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = e.store.Claim(context.Background(), "order-1", long)
		})
	}
	close(start)
	wg.Wait()
	count := map[idempotency.State]int{}
	for i := range n {
		if errs[i] != nil {
			e.t.Fatalf("concurrent Claim: %v", errs[i])
		}
		count[results[i].State]++
	}
	if count[idempotency.Claimed] != 1 || count[idempotency.InProgress] != n-1 {
		e.t.Fatalf("%d concurrent Claims gave %v, want 1 Claimed and %d InProgress", n, count, n-1)
	}
}

// claimStates: a new key is Claimed, then InProgress, then Done once completed.
func claimStates(e *env) {
	c := e.want("k", idempotency.Claimed)
	e.want("k", idempotency.InProgress)
	e.complete(c, long)
	e.want("k", idempotency.Done)
	e.want("k", idempotency.Done)
}

func keysAreIndependent(e *env) {
	a := e.want("a", idempotency.Claimed)
	b := e.want("b", idempotency.Claimed)
	e.complete(a, long)
	e.want("b", idempotency.InProgress)
	e.release(b)
	e.want("a", idempotency.Done)
	e.want("b", idempotency.Claimed)
}

// keysAreOpaque: keys with separators, wildcards, quotes, non-ASCII and some
// length are ordinary keys, each distinct from the others.
func keysAreOpaque(e *env) {
	keys := []string{
		"orders.confirmed:01JTQ2Z7", "with space", "ünïcödé ✓", "a:b/c?d=e&f#g", `quote'"\`,
		"100%_*", "*", "k", "K", " k", "k ", strings.Repeat("x", 250),
	}
	claims := make([]idempotency.Claim, len(keys))
	for i, k := range keys {
		claims[i] = e.want(k, idempotency.Claimed)
	}
	for i := 0; i < len(keys); i += 2 {
		e.complete(claims[i], long)
	}
	for i, k := range keys {
		if i%2 == 0 {
			e.want(k, idempotency.Done)
		} else {
			e.want(k, idempotency.InProgress)
		}
	}
}

func leaseExpiryFreesKey(e *env) {
	a := e.claim("k", e.short())
	if a.State != idempotency.Claimed {
		e.t.Fatalf("first Claim = %v, want Claimed", a.State)
	}
	e.pass(e.short())
	var b idempotency.Claim
	e.eventually("a new owner claims the key after the lease expired", func() bool {
		b = e.claim("k", long)
		return b.State == idempotency.Claimed
	})
	if b.Token == a.Token {
		e.t.Fatalf("the new owner got the expired owner's token %q", a.Token)
	}
}

// staleOwnerIsRefused: an owner whose lease expired and was re-claimed can
// neither complete nor release the new owner's claim.
func staleOwnerIsRefused(e *env) {
	stale := e.claim("k", e.short())
	e.pass(e.short())
	var owner idempotency.Claim
	e.eventually("a new owner claims the key", func() bool {
		owner = e.claim("k", long)
		return owner.State == idempotency.Claimed
	})
	ctx := context.Background()
	e.wantErr("Complete by the stale owner", e.store.Complete(ctx, stale, long), idempotency.ErrNotOwner)
	e.wantErr("Release by the stale owner", e.store.Release(ctx, stale), idempotency.ErrNotOwner)
	e.want("k", idempotency.InProgress) // the new owner still holds it
	e.complete(owner, long)
	e.want("k", idempotency.Done)
	e.wantErr("Complete by the stale owner after the new owner completed", e.store.Complete(ctx, stale, long), idempotency.ErrNotOwner)
}

// expiredOwnerIsRefused: once its lease expired, an owner is refused even if
// nobody claimed the key since, and the key is still free.
func expiredOwnerIsRefused(e *env) {
	c := e.claim("k", e.short())
	e.pass(e.short())
	ctx := context.Background()
	e.wantErr("Complete after the lease expired", e.store.Complete(ctx, c, long), idempotency.ErrNotOwner)
	e.wantErr("Release after the lease expired", e.store.Release(ctx, c), idempotency.ErrNotOwner)
	e.eventually("the key can be claimed", func() bool { return e.claim("k", long).State == idempotency.Claimed })
}

func forgedTokenIsRefused(e *env) {
	c := e.want("k", idempotency.Claimed)
	forged := c
	forged.Token = c.Token + "x"
	ctx := context.Background()
	e.wantErr("Complete with a forged token", e.store.Complete(ctx, forged, long), idempotency.ErrNotOwner)
	e.wantErr("Release with a forged token", e.store.Release(ctx, forged), idempotency.ErrNotOwner)
	other := idempotency.Claim{Key: "never-claimed", Token: c.Token, State: idempotency.Claimed}
	e.wantErr("Complete of a key never claimed", e.store.Complete(ctx, other, long), idempotency.ErrNotOwner)
	e.want("k", idempotency.InProgress)
	e.want("never-claimed", idempotency.Claimed)
}

// doneOutlivesLease: a Done record lasts its TTL, not the claim's lease.
func doneOutlivesLease(e *env) {
	c := e.claim("k", e.short())
	e.complete(c, long)
	e.pass(e.short())
	e.want("k", idempotency.Done)
}

func ttlExpiryForgetsDone(e *env) {
	c := e.want("k", idempotency.Claimed)
	e.complete(c, e.short())
	e.want("k", idempotency.Done)
	e.pass(e.short())
	e.eventually("the Done key is forgotten after its TTL", func() bool { return e.claim("k", long).State == idempotency.Claimed })
}

func releaseFreesKeyAtOnce(e *env) {
	a := e.want("k", idempotency.Claimed)
	e.release(a)
	b := e.want("k", idempotency.Claimed)
	if b.Token == a.Token {
		e.t.Fatalf("the new owner got the released owner's token %q", a.Token)
	}
}

func releaseTwiceIsRefused(e *env) {
	c := e.want("k", idempotency.Claimed)
	e.release(c)
	e.wantErr("second Release", e.store.Release(context.Background(), c), idempotency.ErrNotOwner)
	e.wantErr("Complete after Release", e.store.Complete(context.Background(), c, long), idempotency.ErrNotOwner)
	e.want("k", idempotency.Claimed)
}

func releaseAfterComplete(e *env) {
	c := e.want("k", idempotency.Claimed)
	e.complete(c, long)
	e.wantErr("Release after Complete", e.store.Release(context.Background(), c), idempotency.ErrNotOwner)
	e.want("k", idempotency.Done)
}

// completeTwiceIsHarmless: a Complete whose reply was lost may be repeated.
func completeTwiceIsHarmless(e *env) {
	c := e.want("k", idempotency.Claimed)
	e.complete(c, long)
	e.complete(c, long)
	e.want("k", idempotency.Done)
}

func tokensAreUnique(e *env) {
	seen := map[string]bool{}
	for i := range 100 {
		c := e.want(fmt.Sprint("k", i%3), idempotency.Claimed)
		if seen[c.Token] {
			e.t.Fatalf("token %q handed out twice", c.Token)
		}
		seen[c.Token] = true
		e.release(c)
	}
}

func invalidArguments(e *env) {
	ctx := context.Background()
	_, err := e.store.Claim(ctx, "", long)
	e.wantErr("Claim of an empty key", err, broker.ErrInvalidArgument)
	for _, lease := range []time.Duration{0, -time.Second} {
		_, err = e.store.Claim(ctx, "k", lease)
		e.wantErr(fmt.Sprintf("Claim with lease %v", lease), err, broker.ErrInvalidArgument)
	}
	c := e.want("k", idempotency.Claimed) // the refused Claims took nothing
	for _, ttl := range []time.Duration{0, -time.Second} {
		e.wantErr(fmt.Sprintf("Complete with TTL %v", ttl), e.store.Complete(ctx, c, ttl), broker.ErrInvalidArgument)
	}
	notOwned := []idempotency.Claim{
		{},
		{Key: "k", State: idempotency.InProgress},
		{Key: "k", State: idempotency.Done},
		{Key: "k", State: idempotency.Claimed}, // no token
		{Key: "", Token: c.Token, State: idempotency.Claimed},
	}
	for _, bad := range notOwned {
		e.wantErr(fmt.Sprintf("Complete(%+v)", bad), e.store.Complete(ctx, bad, long), broker.ErrInvalidArgument)
		e.wantErr(fmt.Sprintf("Release(%+v)", bad), e.store.Release(ctx, bad), broker.ErrInvalidArgument)
	}
	e.want("k", idempotency.InProgress)
	e.complete(c, long)
}

// endedContextChangesNothing: a call with an ended context fails with the
// context's error and leaves the key as it was.
func endedContextChangesNothing(e *env) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := e.store.Claim(ended, "k", long); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Claim with an ended context = %v, %v; want context.Canceled", c.State, err)
	}
	c := e.want("k", idempotency.Claimed)
	e.wantErr("Complete with an ended context", e.store.Complete(ended, c, long), context.Canceled)
	e.wantErr("Release with an ended context", e.store.Release(ended, c), context.Canceled)
	e.want("k", idempotency.InProgress)
	e.complete(c, long)
	e.want("k", idempotency.Done)
}

// exactlyOnceUnderContention: workers race over the same keys, the first
// owner of each key fails (Release) and a later one succeeds (Complete); every
// key's side effect happens exactly once.
func exactlyOnceUnderContention(e *env) {
	const workers, keys = 16, 40
	var mu sync.Mutex
	claims := map[string]int{}
	effects := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			for done := 0; done < keys; {
				if time.Now().After(deadline) {
					errc <- fmt.Errorf("worker %d: keys still not done after 30s", w)
					return
				}
				done = 0
				for i := range keys {
					key := fmt.Sprintf("key-%02d", (i+w*7)%keys)
					c, err := e.store.Claim(ctx, key, long)
					if err != nil {
						errc <- err
						return
					}
					switch c.State {
					case idempotency.Done:
						done++
					case idempotency.Claimed:
						mu.Lock()
						claims[key]++
						fail := claims[key] == 1
						if !fail {
							effects[key]++
						}
						mu.Unlock()
						if fail {
							err = e.store.Release(ctx, c)
						} else {
							err = e.store.Complete(ctx, c, long)
						}
						if err != nil {
							errc <- fmt.Errorf("owner of %s: %w", key, err)
							return
						}
					}
				}
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		e.t.Fatal(err)
	}
	for i := range keys {
		key := fmt.Sprintf("key-%02d", i)
		if effects[key] != 1 || claims[key] != 2 {
			e.t.Errorf("%s: %d claims and %d side effects, want 2 claims (one failed) and 1 side effect", key, claims[key], effects[key])
		}
	}
}

// clock is the suite's fake clock, safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
