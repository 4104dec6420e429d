package driver

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/brokerkit/broker"
)

// Publisher is the portable broker.Publisher over a Sender.
type Publisher struct {
	s    Sender
	name string

	mu       sync.RWMutex // guards closed; held for reading while a Send is being started
	closed   bool
	inFlight sync.WaitGroup
}

var _ broker.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher that sends through s and owns it. name
// prefixes errors ("kafka", "amqp", ...).
func NewPublisher(name string, s Sender) *Publisher {
	return &Publisher{s: s, name: name}
}

// Publish implements broker.Publisher. It checks every message before sending
// any: a nil message or an invalid topic gives ErrInvalidArgument, a message over
// the broker's limit gives ErrMessageTooLarge, and in both cases nothing is sent.
func (p *Publisher) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return fmt.Errorf("%s: publish: %w", p.name, err)
	}
	limit := p.s.MaxMessageSize()
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("%s: publish to %q: message #%d is nil: %w", p.name, topic, i, broker.ErrInvalidArgument)
		}
		if limit > 0 && m.Size() > limit {
			return fmt.Errorf("%s: publish to %q: message #%d (id %q) is %d bytes, over the limit of %d: %w",
				p.name, topic, i, m.ID, m.Size(), limit, broker.ErrMessageTooLarge)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	broker.AssignIDs(msgs)
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return fmt.Errorf("%s: publish to %q: %w", p.name, topic, broker.ErrClosed)
	}
	p.inFlight.Add(1)
	p.mu.RUnlock()
	defer p.inFlight.Done()

	err := p.s.Send(ctx, topic, msgs)
	if err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return ctx.Err()
	}
	return err
}

// Close waits for in-flight publishes, then closes the Sender. Later calls
// return nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.inFlight.Wait()
	return p.s.Close()
}

// Stats implements broker.StatsReader when the Sender does; otherwise it
// returns an error wrapping ErrUnsupported.
func (p *Publisher) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	if sr, ok := p.s.(StatsReader); ok {
		return sr.Stats(ctx, topic, group)
	}
	return broker.Stats{}, fmt.Errorf("%s: stats: %w", p.name, broker.ErrUnsupported)
}
