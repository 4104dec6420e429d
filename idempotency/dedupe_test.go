package idempotency_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// spyStore wraps a Store, records the calls and can fail them.
type spyStore struct {
	idempotency.Store
	mu                                sync.Mutex
	claimErr, completeErr, releaseErr error
	keys                              []string
	leases, ttls                      []time.Duration
	completes, releases               int
}

func newSpy() *spyStore { return &spyStore{Store: idempotency.NewMemoryStore(nil)} }

func (s *spyStore) Claim(ctx context.Context, key string, lease time.Duration) (idempotency.Claim, error) {
	s.mu.Lock()
	s.keys = append(s.keys, key)
	s.leases = append(s.leases, lease)
	err := s.claimErr
	s.mu.Unlock()
	if err != nil {
		return idempotency.Claim{}, err
	}
	return s.Store.Claim(ctx, key, lease)
}

func (s *spyStore) Complete(ctx context.Context, c idempotency.Claim, ttl time.Duration) error {
	s.mu.Lock()
	s.completes++
	s.ttls = append(s.ttls, ttl)
	err := s.completeErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.Complete(ctx, c, ttl)
}

func (s *spyStore) Release(ctx context.Context, c idempotency.Claim) error {
	s.mu.Lock()
	s.releases++
	err := s.releaseErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.Release(ctx, c)
}

// effects is a handler whose side effect is counting calls per message ID;
// it returns what result says for the call.
type effects struct {
	mu     sync.Mutex
	n      map[string]int
	result func(calls int) error
}

func newEffects(result func(calls int) error) *effects {
	if result == nil {
		result = func(int) error { return nil }
	}
	return &effects{n: map[string]int{}, result: result}
}

func (e *effects) handle(ctx context.Context, m *broker.Message) error {
	e.mu.Lock()
	e.n[m.ID]++
	calls := e.n[m.ID]
	e.mu.Unlock()
	return e.result(calls)
}

func (e *effects) count(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[id]
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The race that check-then-act loses: one message delivered twice at the same
// time. Both calls are inside Dedupe at once, the first one's handler blocked
// until the second has returned; the side effect runs once and the other call
// is told ErrInProgress.
func TestDedupeConcurrentDuplicates(t *testing.T) {
	for i := range 20 {
		store := idempotency.NewMemoryStore(nil)
		var inside atomic.Int32 // calls between entering Dedupe and returning
		var sent atomic.Int32
		release := make(chan struct{})
		handler := func(ctx context.Context, m *broker.Message) error {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
				return errors.New("test: the duplicate never returned")
			}
			sent.Add(1)
			return nil
		}
		track := func(next broker.Handler) broker.Handler {
			return func(ctx context.Context, m *broker.Message) error {
				inside.Add(1)
				defer inside.Add(-1)
				return next(ctx, m)
			}
		}
		h := broker.Chain(handler, track, idempotency.Dedupe(store, &idempotency.DedupeOptions{Logger: quiet()}))

		id := fmt.Sprint("order-", i)
		results := make(chan error, 2)
		for range 2 {
			go func() { results <- h(context.Background(), &broker.Message{ID: id}) }()
		}
		var first error
		select {
		case first = <-results:
		case <-time.After(10 * time.Second):
			t.Fatal("neither call returned")
		}
		if !errors.Is(first, idempotency.ErrInProgress) {
			t.Fatalf("the call that returned while the other was in its handler got %v, want ErrInProgress", first)
		}
		if broker.IsPermanent(first) {
			t.Fatalf("ErrInProgress must be retried, not dead-lettered: %v", first)
		}
		if inside.Load() != 1 {
			t.Fatalf("%d calls inside Dedupe, want the handler's call still running", inside.Load())
		}
		close(release)
		if second := <-results; second != nil {
			t.Fatalf("the owner's call returned %v, want nil", second)
		}
		if got := sent.Load(); got != 1 {
			t.Fatalf("side effect ran %d times, want 1", got)
		}
		// A later copy is skipped and acknowledged.
		if err := h(context.Background(), &broker.Message{ID: id}); err != nil || sent.Load() != 1 {
			t.Fatalf("a later duplicate returned %v and the side effect count is %d; want nil and 1", err, sent.Load())
		}
	}
}

func TestDedupeFailureReleases(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"transient", errors.New("smtp 421")},
		{"permanent", broker.Permanent(errors.New("invalid address"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newEffects(func(calls int) error {
				if calls == 1 {
					return tc.err
				}
				return nil
			})
			h := idempotency.Dedupe(idempotency.NewMemoryStore(nil), &idempotency.DedupeOptions{Logger: quiet()})(fx.handle)
			m := &broker.Message{ID: "m1"}
			if err := h(context.Background(), m); err != tc.err {
				t.Fatalf("first call returned %v, want the handler's error unchanged", err)
			}
			// The redelivery (or a redrive from the dead-letter topic) runs again.
			if err := h(context.Background(), m); err != nil || fx.count("m1") != 2 {
				t.Fatalf("after a failure: %v with %d handler calls, want nil and 2", err, fx.count("m1"))
			}
			if err := h(context.Background(), m); err != nil || fx.count("m1") != 2 {
				t.Fatalf("after success: %v with %d handler calls, want nil and 2", err, fx.count("m1"))
			}
		})
	}
}

func TestDedupePanicReleases(t *testing.T) {
	calls := 0
	h := idempotency.Dedupe(idempotency.NewMemoryStore(nil), &idempotency.DedupeOptions{Logger: quiet()})(
		func(ctx context.Context, m *broker.Message) error {
			calls++
			if calls == 1 {
				panic("boom")
			}
			return nil
		})
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Fatalf("recovered %v, want the handler's panic to go on through Dedupe", p)
			}
		}()
		_ = h(context.Background(), &broker.Message{ID: "m1"})
	}()
	if err := h(context.Background(), &broker.Message{ID: "m1"}); err != nil || calls != 2 {
		t.Fatalf("after a panic: %v with %d calls, want the redelivery to run the handler", err, calls)
	}
}

func TestDedupeEmptyKeyIsPermanent(t *testing.T) {
	for name, opts := range map[string]*idempotency.DedupeOptions{
		"empty ID":         nil,
		"Key returns \"\"": {Key: func(*broker.Message) string { return "" }},
	} {
		t.Run(name, func(t *testing.T) {
			fx := newEffects(nil)
			err := idempotency.Dedupe(idempotency.NewMemoryStore(nil), opts)(fx.handle)(context.Background(), &broker.Message{})
			if !errors.Is(err, broker.ErrInvalidArgument) || !broker.IsPermanent(err) {
				t.Fatalf("got %v, want a permanent error wrapping ErrInvalidArgument", err)
			}
			if fx.count("") != 0 {
				t.Fatal("the handler ran for a message that cannot be deduplicated")
			}
		})
	}
}

func TestDedupeKeyAndNamespace(t *testing.T) {
	spy := newSpy()
	fx := newEffects(nil)
	h := idempotency.Dedupe(spy, &idempotency.DedupeOptions{
		Key:       func(m *broker.Message) string { return m.Headers["order-id"] },
		Namespace: "notifications",
	})(fx.handle)
	// Two messages, two IDs, one order: the second is a duplicate.
	_ = h(context.Background(), &broker.Message{ID: "a", Headers: map[string]string{"order-id": "o-7"}})
	_ = h(context.Background(), &broker.Message{ID: "b", Headers: map[string]string{"order-id": "o-7"}})
	if fx.count("a") != 1 || fx.count("b") != 0 {
		t.Errorf("handler calls: a=%d b=%d, want 1 and 0", fx.count("a"), fx.count("b"))
	}
	if want := []string{"notifications:o-7", "notifications:o-7"}; fmt.Sprint(spy.keys) != fmt.Sprint(want) {
		t.Errorf("claimed keys %q, want %q", spy.keys, want)
	}
}

func TestDedupeDefaults(t *testing.T) {
	spy := newSpy()
	h := idempotency.Dedupe(spy, nil)(newEffects(nil).handle)
	if err := h(context.Background(), &broker.Message{ID: "m1"}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(spy.keys, spy.leases, spy.ttls) != fmt.Sprint([]string{"m1"}, []time.Duration{5 * time.Minute}, []time.Duration{24 * time.Hour}) {
		t.Errorf("key %v, lease %v, TTL %v; want m1, 5m, 24h", spy.keys, spy.leases, spy.ttls)
	}
}

func TestDedupeInProgressIsRetryable(t *testing.T) {
	store := idempotency.NewMemoryStore(nil)
	if _, err := store.Claim(context.Background(), "m1", time.Hour); err != nil { // another worker has it
		t.Fatal(err)
	}
	fx := newEffects(nil)
	err := idempotency.Dedupe(store, nil)(fx.handle)(context.Background(), &broker.Message{ID: "m1"})
	if !errors.Is(err, idempotency.ErrInProgress) || broker.IsPermanent(err) || !broker.IsRetryable(err) {
		t.Fatalf("got %v, want a retryable, non-permanent error wrapping ErrInProgress", err)
	}
	if fx.count("m1") != 0 {
		t.Fatal("the handler ran while another worker held the claim")
	}
}

func TestDedupeClaimErrors(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		permanent bool
	}{
		{"outage is retried", fmt.Errorf("redis: dial: %w", broker.ErrUnavailable), false},
		{"invalid key is permanent", fmt.Errorf("sql: key too long: %w", broker.ErrInvalidArgument), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spy := newSpy()
			spy.claimErr = tc.err
			fx := newEffects(nil)
			err := idempotency.Dedupe(spy, nil)(fx.handle)(context.Background(), &broker.Message{ID: "m1"})
			if !errors.Is(err, tc.err) || broker.IsPermanent(err) != tc.permanent {
				t.Fatalf("got %v (permanent %v), want it to wrap %v with permanent %v", err, broker.IsPermanent(err), tc.err, tc.permanent)
			}
			if fx.count("m1") != 0 {
				t.Fatal("the handler ran without a claim")
			}
		})
	}
	t.Run("ended context is returned unwrapped", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := idempotency.Dedupe(idempotency.NewMemoryStore(nil), nil)(newEffects(nil).handle)(ctx, &broker.Message{ID: "m1"})
		if err != context.Canceled {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

// When Complete fails after the side effect, the message is acknowledged and
// the failure logged: redelivering it would only run the side effect again.
func TestDedupeCompleteFailureAcks(t *testing.T) {
	spy := newSpy()
	spy.completeErr = fmt.Errorf("redis: timeout: %w", broker.ErrUnavailable)
	var logs bytes.Buffer
	fx := newEffects(nil)
	h := idempotency.Dedupe(spy, &idempotency.DedupeOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})(fx.handle)
	if err := h(context.Background(), &broker.Message{ID: "m1"}); err != nil {
		t.Fatalf("got %v, want nil: the side effect happened", err)
	}
	if spy.completes != 3 {
		t.Errorf("Complete tried %d times, want 3", spy.completes)
	}
	if !strings.Contains(logs.String(), "could not mark the message done") || !strings.Contains(logs.String(), "id=m1") {
		t.Errorf("log does not report the failed Complete:\n%s", logs.String())
	}
}

// A handler that outlives its lease: Complete is refused, the message is
// acknowledged, and the log says to lengthen the lease.
func TestDedupeHandlerOutlivesLease(t *testing.T) {
	clock := newFakeClock()
	store := idempotency.NewMemoryStore(&idempotency.MemoryOptions{Now: clock.Now})
	var logs bytes.Buffer
	h := idempotency.Dedupe(store, &idempotency.DedupeOptions{
		Lease:  time.Minute,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})(func(ctx context.Context, m *broker.Message) error {
		clock.Advance(2 * time.Minute)
		return nil
	})
	if err := h(context.Background(), &broker.Message{ID: "m1"}); err != nil {
		t.Fatalf("got %v, want nil", err)
	}
	if !strings.Contains(logs.String(), "outlived its claim's lease") {
		t.Errorf("log does not report the expired lease:\n%s", logs.String())
	}
}

func TestDedupeReleaseFailureReturnsHandlerError(t *testing.T) {
	spy := newSpy()
	spy.releaseErr = errors.New("redis: connection refused")
	var logs bytes.Buffer
	herr := errors.New("smtp 421")
	h := idempotency.Dedupe(spy, &idempotency.DedupeOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})(
		func(ctx context.Context, m *broker.Message) error { return herr })
	if err := h(context.Background(), &broker.Message{ID: "m1"}); err != herr {
		t.Fatalf("got %v, want the handler's error", err)
	}
	if spy.releases != 3 || !strings.Contains(logs.String(), "could not release the claim") {
		t.Errorf("Release tried %d times (want 3); log:\n%s", spy.releases, logs.String())
	}
}

// Complete and Release run even when the handler's context ended as it
// returned (the consumer shutting down).
func TestDedupeSettlesAfterContextEnds(t *testing.T) {
	store := idempotency.NewMemoryStore(nil)
	for id, result := range map[string]error{"ok": nil, "failed": context.Canceled} {
		ctx, cancel := context.WithCancel(context.Background())
		h := idempotency.Dedupe(store, nil)(func(ctx context.Context, m *broker.Message) error {
			cancel()
			return result
		})
		if err := h(ctx, &broker.Message{ID: id}); err != result {
			t.Fatalf("%s: got %v, want %v", id, err, result)
		}
	}
	wantState(t, store, "ok", idempotency.Done)
	wantState(t, store, "failed", idempotency.Claimed)
}

func TestDedupeBadArgumentsPanic(t *testing.T) {
	for name, f := range map[string]func(){
		"nil store":      func() { idempotency.Dedupe(nil, nil) },
		"negative lease": func() { idempotency.Dedupe(idempotency.NewMemoryStore(nil), &idempotency.DedupeOptions{Lease: -1}) },
		"negative TTL":   func() { idempotency.Dedupe(idempotency.NewMemoryStore(nil), &idempotency.DedupeOptions{TTL: -1}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Dedupe with %s did not panic", name)
				}
			}()
			f()
		})
	}
}
