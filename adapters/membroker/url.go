package membroker

import (
	"context"
	"fmt"
	"net/url"
	"sync"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// Scheme is the URL scheme this package registers.
const Scheme = "mem"

func init() { broker.Register(Scheme, &opener{brokers: map[string]*Broker{}}) }

// opener keeps the named brokers that "mem://name" URLs share.
type opener struct {
	mu      sync.Mutex
	brokers map[string]*Broker
}

func (o *opener) open(u *url.URL) (*Broker, *driver.Query, error) {
	if u.User != nil || u.Path != "" && u.Path != "/" || u.Port() != "" {
		return nil, nil, fmt.Errorf("mem: URL %q: want mem://[name]?params: %w", broker.Redact(u.String()), broker.ErrInvalidArgument)
	}
	q := driver.NewQuery(u)
	opts := Options{MaxQueued: q.Int("max_queued", 0), MaxMessageSize: q.Int("max_message_size", 0)}
	o.mu.Lock()
	defer o.mu.Unlock()
	b := o.brokers[u.Host]
	if b == nil {
		var err error
		if b, err = New(&opts); err != nil {
			return nil, nil, err
		}
		o.brokers[u.Host] = b
	} else if opts.MaxQueued != 0 && opts.MaxQueued != b.opts.MaxQueued ||
		opts.MaxMessageSize != 0 && opts.MaxMessageSize != b.opts.MaxMessageSize {
		return nil, nil, fmt.Errorf("mem: URL %q: broker %q is already open with max_queued=%d max_message_size=%d: %w",
			broker.Redact(u.String()), u.Host, b.opts.MaxQueued, b.opts.MaxMessageSize, broker.ErrInvalidArgument)
	}
	return b, q, nil
}

func (o *opener) OpenPublisher(ctx context.Context, u *url.URL) (broker.Publisher, error) {
	b, q, err := o.open(u)
	if err != nil {
		return nil, err
	}
	q.SkipConsumerOptions() // one URL serves publisher and consumers
	if err := q.Err(); err != nil {
		return nil, err
	}
	return b.NewPublisher(), nil
}

func (o *opener) OpenConsumer(ctx context.Context, u *url.URL, base broker.ConsumerOptions) (broker.Consumer, error) {
	b, q, err := o.open(u)
	if err != nil {
		return nil, err
	}
	co := q.ConsumerOptions(base)
	if err := q.Err(); err != nil {
		return nil, err
	}
	return b.NewConsumer(&co)
}
