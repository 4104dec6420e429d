package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/redisstore"
)

// gate is a client hook that holds the client's first round trip until
// release, and records the size of every pipeline of scripts.
type gate struct {
	entered chan struct{} // closed when the first round trip is held
	open    chan struct{}
	first   sync.Once
	opened  sync.Once
	mu      sync.Mutex
	pipes   []int
	names   map[string]int // how many commands of each name were sent
}

// addGate adds a gate to c, released at the latest when t ends.
func addGate(t *testing.T, c *redis.Client) *gate {
	g := &gate{entered: make(chan struct{}), open: make(chan struct{}), names: map[string]int{}}
	c.AddHook(g)
	t.Cleanup(g.release)
	return g
}

// release lets the first round trip go, and every later one pass.
func (g *gate) release() { g.opened.Do(func() { close(g.open) }) }

func (g *gate) hold() {
	g.first.Do(func() {
		close(g.entered)
		<-g.open
	})
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		g.hold()
		g.mu.Lock()
		g.names[cmd.Name()]++
		g.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.hold()
		g.mu.Lock()
		if name := cmds[0].Name(); name == "evalsha" || name == "eval" { // not a connection's setup
			g.pipes = append(g.pipes, len(cmds))
		}
		for _, cmd := range cmds {
			g.names[cmd.Name()]++
		}
		g.mu.Unlock()
		return next(ctx, cmds)
	}
}

// sent returns how many commands named name were sent so far.
func (g *gate) sent(name string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.names[name]
}

// pipelines returns the sizes of the pipelines sent so far.
func (g *gate) pipelines() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.pipes)
}

// waitQueued waits until n calls of s wait for a batch.
func waitQueued(t *testing.T, s *redisstore.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for redisstore.Queued(s) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued after 10s, want %d", redisstore.Queued(s), n)
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// await returns what f returns, or fails t if it takes over 10s.
func await[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return within 10s", what)
		panic("unreachable")
	}
}

// Under batching, every caller gets the answer to its own call: goroutines
// run sequences of Claim, Complete and Release on keys of their own whose
// every answer is known.
func TestConcurrentCalls(t *testing.T) {
	for _, inFlight := range []int{1, redisstore.DefaultMaxInFlight} {
		t.Run(fmt.Sprint("MaxInFlight=", inFlight), func(t *testing.T) {
			c := client(t)
			g := addGate(t, c)
			g.release()
			s := newStoreWith(t, c, redisstore.Options{MaxInFlight: inFlight})
			const workers, rounds = 16, 60
			var wg sync.WaitGroup
			errc := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					if err := sequences(s, w, rounds); err != nil {
						errc <- err
					}
				})
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Error(err)
			}
			if sizes := g.pipelines(); slices.Max(append(sizes, 0)) < 2 {
				t.Errorf("%d workers never shared a round trip (pipelines %v)", workers, sizes)
			}
		})
	}
}

// sequences runs rounds sequences of calls on worker w's keys and returns the
// first answer that differs from the expected one.
func sequences(s *redisstore.Store, w, rounds int) error {
	ctx := context.Background()
	claim := func(key string, want idempotency.State) (idempotency.Claim, error) {
		c, err := s.Claim(ctx, key, time.Minute)
		if err == nil && c.State != want {
			err = fmt.Errorf("Claim(%q) = %v, want %v", key, c.State, want)
		}
		return c, err
	}
	check := func(what string, err, want error) error {
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			return fmt.Errorf("%s = %v, want %v", what, err, want)
		}
		return nil
	}
	for i := range rounds {
		key := fmt.Sprintf("w%d-%d", w, i)
		c1, err := claim(key, idempotency.Claimed)
		if err != nil {
			return err
		}
		var errs []error
		switch i % 3 {
		case 0: // released, claimed again, completed by the second owner
			errs = append(errs, check("Release", s.Release(ctx, c1), nil))
			c2, err := claim(key, idempotency.Claimed)
			if err != nil {
				return err
			}
			errs = append(errs,
				check("Complete by the first owner", s.Complete(ctx, c1, time.Minute), idempotency.ErrNotOwner),
				check("Complete", s.Complete(ctx, c2, time.Minute), nil))
			_, err = claim(key, idempotency.Done)
			errs = append(errs, err)
		case 1: // completed twice, then not released
			errs = append(errs,
				check("Complete", s.Complete(ctx, c1, time.Minute), nil),
				check("Complete again", s.Complete(ctx, c1, time.Minute), nil),
				check("Release after Complete", s.Release(ctx, c1), idempotency.ErrNotOwner))
			_, err = claim(key, idempotency.Done)
			errs = append(errs, err)
		case 2: // in progress for others, released twice
			_, err = claim(key, idempotency.InProgress)
			errs = append(errs, err,
				check("Release", s.Release(ctx, c1), nil),
				check("Release again", s.Release(ctx, c1), idempotency.ErrNotOwner))
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
	}
	return nil
}

// result is what a call returned.
type result struct {
	claim idempotency.Claim
	err   error
}

// After SCRIPT FLUSH, the calls of a batch whose scripts are gone are sent
// again, alone, once their scripts are loaded; every caller gets its answer.
func TestScriptFlush(t *testing.T) {
	admin := client(t)
	c := client(t)
	s := newStoreWith(t, c, redisstore.Options{MaxInFlight: 1})
	ctx := context.Background()
	var toComplete, toRelease []idempotency.Claim
	for i := range 8 {
		claim, err := s.Claim(ctx, fmt.Sprint("old-", i), time.Minute)
		if err != nil || claim.State != idempotency.Claimed {
			t.Fatalf("Claim = %v, %v; want Claimed", claim.State, err)
		}
		if i%2 == 0 {
			toComplete = append(toComplete, claim)
		} else {
			toRelease = append(toRelease, claim)
		}
	}
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	g := addGate(t, c)
	results := make(chan result, 13)
	go func() { // the leader, held in the hook
		claim, err := s.Claim(ctx, "first", time.Minute)
		results <- result{claim, err}
	}()
	await(t, "the first round trip", g.entered)
	for i := range 4 { // queued behind it: 12 calls of three scripts
		go func() {
			claim, err := s.Claim(ctx, fmt.Sprintf("new-%d", i), time.Minute)
			results <- result{claim, err}
		}()
		go func() { results <- result{err: s.Complete(ctx, toComplete[i], time.Minute)} }()
		go func() { results <- result{err: s.Release(ctx, toRelease[i])} }()
	}
	waitQueued(t, s, 12)
	g.release()
	claimed := 0
	for range 13 {
		r := await(t, "a call", results)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.claim.State == idempotency.Claimed {
			claimed++
		}
	}
	if claimed != 5 {
		t.Errorf("%d claims answered Claimed, want 5", claimed)
	}
	// The lone first claim is sent again as a single command; then the batch
	// of 12, in which the claim script is loaded already, and the 8 calls of
	// the two other scripts again.
	if got, want := g.pipelines(), []int{12, 8}; !slices.Equal(got, want) {
		t.Errorf("pipelines %v, want %v", got, want)
	}
	if n := g.sent("script"); n != 3 {
		t.Errorf("%d SCRIPT LOADs, want one per script", n)
	}
	if n := g.sent("eval"); n != 0 {
		t.Errorf("%d EVALs, want none", n)
	}
	for _, claim := range toComplete {
		if _, err := s.Claim(ctx, claim.Key, time.Minute); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Claim(ctx, claim.Key, time.Minute); c.State != idempotency.Done {
			t.Errorf("%q is %v after its Complete, want Done", claim.Key, c.State)
		}
	}
	for _, claim := range toRelease {
		if c, _ := s.Claim(ctx, claim.Key, time.Minute); c.State != idempotency.Claimed {
			t.Errorf("%q is %v after its Release, want Claimed", claim.Key, c.State)
		}
	}
}

// When SCRIPT LOAD is refused (an ACL user without SCRIPT), the calls whose
// scripts are gone run by EVAL.
func TestScriptLoadRefused(t *testing.T) {
	admin := client(t)
	ctx := context.Background()
	user := "brokerkit-test-noscript-" + fmt.Sprint(rand.Uint64())
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">secret", "~*", "+@all", "-script").Err(); err != nil {
		t.Skipf("cannot create an ACL user: %v", err)
	}
	t.Cleanup(func() { admin.Do(ctx, "ACL", "DELUSER", user) })
	opts := admin.Options()
	limited := redis.NewClient(&redis.Options{Addr: opts.Addr, DB: opts.DB, Username: user, Password: "secret"})
	t.Cleanup(func() { _ = limited.Close() })
	if err := limited.ScriptLoad(ctx, "return 1").Err(); err == nil {
		t.Fatal("the ACL user may SCRIPT LOAD")
	}
	g := addGate(t, limited)
	g.release()
	s := newStore(t, limited)
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			if err := sequences(s, w, 3); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if g.sent("eval") == 0 {
		t.Error("no call ran by EVAL")
	}
}

// A caller whose context ends while its call is queued returns ctx.Err() at
// once, and its call is never sent.
func TestCancelWhileQueued(t *testing.T) {
	admin := client(t)
	c := client(t)
	g := addGate(t, c)
	prefix := "brokerkit-test:" + fmt.Sprint(rand.Uint64()) + ":"
	s := redisstore.New(c, &redisstore.Options{KeyPrefix: prefix, MaxInFlight: 1})
	ctx := context.Background()
	t.Cleanup(func() { admin.Del(ctx, prefix+"first", prefix+"second", prefix+"third") })

	first := make(chan result, 1)
	go func() {
		claim, err := s.Claim(ctx, "first", time.Minute)
		first <- result{claim, err}
	}()
	await(t, "the first round trip", g.entered)
	canceled, cancel := context.WithCancel(ctx)
	second := make(chan result, 1)
	go func() {
		claim, err := s.Claim(canceled, "second", time.Minute)
		second <- result{claim, err}
	}()
	third := make(chan result, 1)
	go func() {
		claim, err := s.Claim(ctx, "third", time.Minute)
		third <- result{claim, err}
	}()
	waitQueued(t, s, 2)
	cancel()
	if r := await(t, "the canceled Claim", second); !errors.Is(r.err, context.Canceled) || r.claim.State != 0 {
		t.Errorf("canceled Claim = %v, %v; want context.Canceled", r.claim.State, r.err)
	}
	waitQueued(t, s, 1)
	g.release()
	for _, ch := range []chan result{first, third} {
		if r := await(t, "a Claim", ch); r.err != nil || r.claim.State != idempotency.Claimed {
			t.Errorf("Claim = %v, %v; want Claimed", r.claim.State, r.err)
		}
	}
	if n := admin.Exists(ctx, prefix+"second").Val(); n != 0 {
		t.Error("the canceled Claim was sent")
	}
}

// Callers whose contexts end at random moments, queued, leading or in
// flight, never leave the store stuck.
func TestCancelUnderLoad(t *testing.T) {
	for _, inFlight := range []int{1, redisstore.DefaultMaxInFlight} {
		t.Run(fmt.Sprint("MaxInFlight=", inFlight), func(t *testing.T) {
			cancelUnderLoad(t, newStoreWith(t, client(t), redisstore.Options{MaxInFlight: inFlight}))
		})
	}
}

func cancelUnderLoad(t *testing.T, s *redisstore.Store) {
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := range 200 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(300))*time.Microsecond)
				_, err := s.Claim(ctx, fmt.Sprintf("w%d-%d", w, i), time.Minute)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if n := redisstore.Queued(s); n != 0 {
		t.Errorf("%d calls still queued", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if claim, err := s.Claim(ctx, "last", time.Minute); err != nil || claim.State != idempotency.Claimed {
		t.Fatalf("Claim after the load = %v, %v; want Claimed", claim.State, err)
	}
}

// A batch is at most MaxBatch calls.
func TestMaxBatch(t *testing.T) {
	c := client(t)
	g := addGate(t, c)
	s := newStoreWith(t, c, redisstore.Options{MaxBatch: 4, MaxInFlight: 1})
	claim, errc := claimer(s, 11)
	claim("first")
	await(t, "the first round trip", g.entered)
	for i := range 10 {
		claim(fmt.Sprint(i))
	}
	waitQueued(t, s, 10)
	g.release()
	for range 11 {
		if err := await(t, "a Claim", errc); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := g.pipelines(), []int{4, 4, 2}; !slices.Equal(got, want) { // after the lone first
		t.Errorf("pipelines %v, want %v", got, want)
	}
}

// Calls made while MaxInFlight round trips are in flight queue.
func TestMaxInFlight(t *testing.T) {
	c := client(t)
	g := addGate(t, c)
	s := newStoreWith(t, c, redisstore.Options{MaxInFlight: 3})
	claim, errc := claimer(s, 10)
	claim("first")
	await(t, "the first round trip", g.entered)
	for i := range 9 { // two are sent, and wait behind the first in the hook
		claim(fmt.Sprint(i))
	}
	waitQueued(t, s, 7)
	g.release()
	for range 10 {
		if err := await(t, "a Claim", errc); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNegativeOptionsPanic(t *testing.T) {
	for _, o := range []redisstore.Options{{MaxBatch: -1}, {MaxInFlight: -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New with %+v did not panic", o)
				}
			}()
			redisstore.New(unreachable(), &o)
		}()
	}
}

// When the server cannot be reached, or the client is closed, every call of
// every batch returns an error, never a state.
func TestOutageBatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client func() *redis.Client
		want   error
	}{
		{"closed port", unreachable, broker.ErrUnavailable},
		{"closed client", func() *redis.Client {
			c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
			_ = c.Close()
			return c
		}, broker.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client()
			defer c.Close()
			g := addGate(t, c)
			s := redisstore.New(c, &redisstore.Options{MaxInFlight: 1})
			ctx := context.Background()
			owned := idempotency.Claim{Key: "order-1", Token: "t", State: idempotency.Claimed}
			results := make(chan result, 10)
			claim := func() {
				claim, err := s.Claim(ctx, "order-1", time.Minute)
				results <- result{claim, err}
			}
			go claim()
			await(t, "the first round trip", g.entered)
			for range 3 {
				go claim()
				go func() { results <- result{err: s.Complete(ctx, owned, time.Hour)} }()
				go func() { results <- result{err: s.Release(ctx, owned)} }()
			}
			waitQueued(t, s, 9)
			g.release()
			for range 10 {
				r := await(t, "a call", results)
				if !errors.Is(r.err, tc.want) || r.claim.State != 0 {
					t.Errorf("call = %v, %v; want no state and an error wrapping %v", r.claim.State, r.err, tc.want)
				}
			}
		})
	}
}

// claimer returns claim, which claims a key for a minute on a goroutine of
// its own, and the channel of the claims' errors, with room for n.
func claimer(s *redisstore.Store, n int) (claim func(key string), errc chan error) {
	errc = make(chan error, n)
	return func(key string) {
		go func() {
			_, err := s.Claim(context.Background(), key, time.Minute)
			errc <- err
		}()
	}, errc
}
