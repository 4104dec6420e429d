package membroker

import (
	"context"
	"fmt"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

type sender struct{ b *Broker }

func (s sender) MaxMessageSize() int { return s.b.opts.MaxMessageSize }
func (s sender) Close() error        { return nil }

// Send stores a copy of each message in every group's queue of topic, all or
// nothing: if any queue would pass MaxQueued, nothing is stored.
func (s sender) Send(ctx context.Context, topic string, msgs []*broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topicLocked(topic)
	for name, q := range t.groups {
		if q.size()+len(msgs) > b.opts.MaxQueued {
			return fmt.Errorf("mem: publish %d message(s) to %q: group %q holds %d of at most %d: %w",
				len(msgs), topic, name, q.size(), b.opts.MaxQueued, broker.ErrFull)
		}
	}
	now := time.Now()
	stored := make([]*broker.Message, len(msgs))
	for i, m := range msgs {
		stored[i] = m.Clone()
	}
	for _, q := range t.groups {
		for _, m := range stored {
			q.seq++
			q.ready = append(q.ready, &entry{seq: q.seq, msg: m, publishedAt: now})
		}
		q.notify()
	}
	return nil
}

// Stats reports the figures of topic's group; DeadLetters is the depth of the
// default group of "<topic>.dlq".
func (s sender) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	return receiver(s).Stats(ctx, topic, group)
}

type receiver struct{ b *Broker }

func (r receiver) Features() driver.Features {
	return driver.Features{
		Capabilities:   broker.Capabilities{FanOut: true, OrderedByKey: true},
		NackRedelivers: true,
	}
}

func (r receiver) Close() error { return nil }

func (r receiver) Subscribe(ctx context.Context, topic string, cfg driver.SubscribeConfig) (driver.Subscription, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topicLocked(topic)
	group := cfg.Options.Group
	q := t.groups[group]
	if q == nil {
		q = newQueue()
		t.groups[group] = q
	}
	q.consumers++
	b.subSeq++
	return &subscription{b: b, q: q, id: b.subSeq, topic: topic}, nil
}

func (r receiver) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	if err := broker.ValidateTopic(topic); err != nil {
		return broker.Stats{}, fmt.Errorf("mem: stats: %w", err)
	}
	if group == "" {
		group = broker.DefaultGroup
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	var st broker.Stats
	if t := b.topics[topic]; t != nil {
		if q := t.groups[group]; q != nil {
			waiting := int64(len(q.ready) + len(q.delayed))
			st = broker.Stats{Depth: waiting, Lag: waiting, InFlight: int64(len(q.inFlight)), Consumers: int64(q.consumers)}
		}
	}
	if t := b.topics[broker.DeadLetterTopic(topic)]; t != nil {
		st.DeadLetters = int64(t.groups[broker.DefaultGroup].size())
	}
	return st, nil
}

type subscription struct {
	b      *Broker
	q      *queue
	id     uint64
	topic  string
	closed bool
}

func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	for {
		s.b.mu.Lock()
		if s.closed {
			s.b.mu.Unlock()
			return nil, fmt.Errorf("mem: receive from %q: %w", s.topic, broker.ErrClosed)
		}
		next := s.q.promote(time.Now())
		out := s.takeLocked(max)
		wake := s.q.wake
		s.b.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		var timer <-chan time.Time
		if !next.IsZero() {
			t := time.NewTimer(time.Until(next))
			timer = t.C
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		case <-timer:
		}
	}
}

// takeLocked takes up to max ready entries in order, passing over those whose
// key is in flight to another subscription. It stops scanning once it has max,
// so a long queue costs nothing beyond what is taken.
func (s *subscription) takeLocked(max int) []*driver.Delivery {
	q := s.q
	var out []*driver.Delivery
	var skipped []*entry
	i := 0
	for ; i < len(q.ready) && len(out) < max; i++ {
		e := q.ready[i]
		if h, held := q.keyHolder[e.msg.Key]; held && h != s.id {
			skipped = append(skipped, e)
			continue
		}
		q.take(e, s.id)
		out = append(out, s.delivery(e))
	}
	rest := q.ready[i:]
	if len(skipped) == 0 {
		clear(q.ready[:i])
		q.ready = rest
	} else {
		q.ready = append(skipped, rest...)
	}
	return out
}

func (s *subscription) delivery(e *entry) *driver.Delivery {
	m := e.msg.Clone()
	m.Topic = s.topic
	m.Attempt = e.deliveries
	m.PublishedAt = e.publishedAt
	return &driver.Delivery{Message: m, Handle: e}
}

func (s *subscription) settle(d *driver.Delivery, back bool, delay time.Duration) error {
	e := d.Handle.(*entry)
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if e.holder != s.id {
		return fmt.Errorf("mem: message %s is no longer held by this consumer: %w", d.Message.ID, broker.ErrClosed)
	}
	s.q.settle(e, back, delay)
	return nil
}

func (s *subscription) Ack(ctx context.Context, d *driver.Delivery) error {
	return s.settle(d, false, 0)
}

func (s *subscription) Nack(ctx context.Context, d *driver.Delivery, delay time.Duration) error {
	return s.settle(d, true, delay)
}

// Close returns every message still in flight on this subscription.
func (s *subscription) Close() error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.q.consumers--
	for e := range s.q.inFlight {
		if e.holder == s.id {
			s.q.settle(e, true, 0)
		}
	}
	return nil
}
