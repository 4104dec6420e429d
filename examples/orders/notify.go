package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// The simulated email provider: every send takes 5-20ms; 12% of attempts fail
// with a transient SMTP error and 2% hang until the handler's timeout.
const (
	smtpMinLatency = 5 * time.Millisecond
	smtpMaxLatency = 20 * time.Millisecond
	smtpFailRate   = 0.12
	smtpHangRate   = 0.02
)

// errSMTPBusy is the provider's transient refusal.
var errSMTPBusy = errors.New("smtp: 421 4.7.0 try again later")

// smtpServer is a slow and flaky email provider. Whether an attempt is slow,
// fails or hangs depends only on the seed, the order and the attempt number,
// so that a run's counts do not depend on scheduling.
type smtpServer struct {
	seed uint64

	mu   sync.Mutex
	sent map[string]int // order ID -> emails sent

	failures atomic.Int64 // attempts refused with errSMTPBusy
	timeouts atomic.Int64 // attempts that hung until the handler's context ended
}

func newSMTPServer(seed uint64) *smtpServer {
	return &smtpServer{seed: seed, sent: map[string]int{}}
}

// attempt is what the provider will do with one delivery attempt of an order.
type attempt struct {
	latency time.Duration
	fail    bool
	hang    bool
}

func (s *smtpServer) plan(orderID string, n int) attempt {
	h := fnv.New64a()
	h.Write([]byte(orderID))
	rng := rand.New(rand.NewPCG(s.seed, h.Sum64()^uint64(n)*0x9e3779b97f4a7c15))
	a := attempt{latency: smtpMinLatency + time.Duration(rng.Int64N(int64(smtpMaxLatency-smtpMinLatency)))}
	switch roll := rng.Float64(); {
	case roll < smtpHangRate:
		a.hang = true
	case roll < smtpHangRate+smtpFailRate:
		a.fail = true
	}
	return a
}

// send emails the customer of ev; n is the delivery attempt.
func (s *smtpServer) send(ctx context.Context, ev OrderConfirmed, n int) error {
	a := s.plan(ev.OrderID, n)
	var done <-chan time.Time
	if !a.hang {
		t := time.NewTimer(a.latency)
		defer t.Stop()
		done = t.C
	}
	select {
	case <-done:
	case <-ctx.Done():
		s.timeouts.Add(1)
		return fmt.Errorf("smtp: send to %s: %w", ev.Email, ctx.Err())
	}
	if a.fail {
		s.failures.Add(1)
		return errSMTPBusy
	}
	s.mu.Lock()
	s.sent[ev.OrderID]++
	s.mu.Unlock()
	return nil
}

// emails returns a copy of the emails sent per order.
func (s *smtpServer) emails() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.sent))
	for k, v := range s.sent {
		out[k] = v
	}
	return out
}

// notifier is the notification service's handler.
type notifier struct{ smtp *smtpServer }

// handle decodes the event and emails the customer. An event that cannot be
// decoded or has no address can never succeed: it fails permanently, so the
// consumer parks it in the dead-letter topic at once.
func (n *notifier) handle(ctx context.Context, m *broker.Message) error {
	var ev OrderConfirmed
	if err := json.Unmarshal(m.Body, &ev); err != nil {
		return broker.Permanent(fmt.Errorf("invalid payload: %w", err))
	}
	if ev.Email == "" {
		return broker.Permanent(fmt.Errorf("invalid payload: no email address for %s", ev.CustomerID))
	}
	return n.smtp.send(ctx, ev, m.Attempt)
}

// countingStore is an idempotency.Store that counts the duplicates it turns
// away.
type countingStore struct {
	idempotency.Store
	done       atomic.Int64 // Claims answered Done: duplicates skipped
	inProgress atomic.Int64 // Claims answered InProgress: copies sent back for later
}

func (s *countingStore) Claim(ctx context.Context, key string, lease time.Duration) (idempotency.Claim, error) {
	c, err := s.Store.Claim(ctx, key, lease)
	if err == nil {
		switch c.State {
		case idempotency.Done:
			s.done.Add(1)
		case idempotency.InProgress:
			s.inProgress.Add(1)
		}
	}
	return c, err
}

// outcomes is the demo's outermost middleware of its own (inside the
// brokerotel ones): it counts the handler calls by what becomes of the
// delivery, by the consumer's rules: acknowledged, redelivered, about to be
// dead-lettered, or handed back at shutdown. The demo knows from acked and
// parked when every event has been dealt with.
type outcomes struct {
	maxAttempts int
	acked       atomic.Int64
	retried     atomic.Int64
	parked      atomic.Int64
	cancelled   atomic.Int64
}

func (o *outcomes) middleware(next broker.Handler) broker.Handler {
	return func(ctx context.Context, m *broker.Message) error {
		err := next(ctx, m)
		switch {
		case err == nil:
			o.acked.Add(1)
		case ctx.Err() != nil: // shutting down: the message goes back, nothing is final
			o.cancelled.Add(1)
		case broker.IsPermanent(err) || m.Attempt >= o.maxAttempts:
			o.parked.Add(1)
		default:
			o.retried.Add(1)
		}
		return err
	}
}

func (o *outcomes) settled() int64 { return o.acked.Load() + o.parked.Load() }

func (o *outcomes) calls() handlerCalls {
	return handlerCalls{acked: o.acked.Load(), retried: o.retried.Load(), parked: o.parked.Load(), cancelled: o.cancelled.Load()}
}

// handlerCalls counts handler calls by outcome.
type handlerCalls struct {
	acked     int64 // returned nil
	retried   int64 // failed; the message is redelivered
	parked    int64 // failed for good; the message goes to the dead-letter topic
	cancelled int64 // failed at shutdown; the message is handed back
}

func (c handlerCalls) total() int64 { return c.acked + c.retried + c.parked + c.cancelled }
