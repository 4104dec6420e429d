package rabbitbroker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
)

// Redial backoff: the first redial after a drop is immediate, then the delay
// doubles up to redialMax. While it runs, callers get the last dial error at
// once instead of each starting a dial of their own.
const (
	redialMin = 100 * time.Millisecond
	redialMax = 5 * time.Second
)

// connector owns one AMQP connection and dials a new one, on demand and one
// dial at a time, after it dropped. It is safe for concurrent use.
type connector struct {
	uri   string // handed to amqp091; it holds the credentials and is never printed
	shown string // the redacted URI, for errors
	cfg   amqp.Config

	mu       sync.Mutex
	conn     *amqp.Connection
	blocked  atomic.Pointer[atomic.Bool] // of conn: the broker blocked publishing (a resource alarm)
	dialing  chan struct{}               // closed when the running dial ends; nil when none runs
	lastErr  error
	failures int
	retryAt  time.Time
	closed   bool
}

func newConnector(uri, shown string, cfg amqp.Config, name string) *connector {
	props := amqp.Table{}
	for k, v := range cfg.Properties {
		props[k] = v
	}
	if _, ok := props["connection_name"]; !ok {
		props["connection_name"] = name
	}
	if _, ok := props["product"]; !ok {
		props["product"] = "brokerkit"
	}
	cfg.Properties = props
	return &connector{uri: uri, shown: shown, cfg: cfg}
}

// get returns the open connection, dialing one if there is none. While the
// broker is unreachable it returns an error wrapping broker.ErrUnavailable;
// wrong credentials give broker.ErrPermissionDenied.
func (c *connector) get(ctx context.Context) (*amqp.Connection, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("amqp: %w", broker.ErrClosed)
		}
		if c.conn != nil && !c.conn.IsClosed() {
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		}
		wait := c.dialing
		if wait == nil {
			if time.Now().Before(c.retryAt) {
				err := c.lastErr
				c.mu.Unlock()
				return nil, err
			}
			wait = make(chan struct{})
			c.dialing = wait
			go c.dial(wait)
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		err := c.lastErr
		ok := c.conn != nil && !c.conn.IsClosed()
		c.mu.Unlock()
		if !ok && err != nil {
			return nil, err
		}
	}
}

// dial runs in its own goroutine so that a caller whose context ends does not
// abandon a half-open connection: the next caller gets it.
func (c *connector) dial(done chan struct{}) {
	conn, err := amqp.DialConfig(c.uri, c.cfg)
	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(done)
	c.dialing = nil
	if err != nil {
		c.failures++
		c.retryAt = time.Now().Add(min(redialMin<<min(c.failures-1, 10), redialMax))
		c.lastErr = wrap(fmt.Sprintf("connect to %s", c.shown), err)
		return
	}
	if c.closed {
		_ = conn.Close()
		return
	}
	if c.conn != nil {
		_ = c.conn.Close()
	}
	c.failures, c.lastErr, c.retryAt = 0, nil, time.Time{}
	c.conn = conn
	blocked := new(atomic.Bool)
	c.blocked.Store(blocked)
	notes := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go func() {
		for b := range notes {
			blocked.Store(b.Active)
		}
		blocked.Store(false)
	}()
}

// isBlocked reports whether the broker told the current connection to stop
// publishing (a memory or disk alarm); a publish would hang until it clears.
func (c *connector) isBlocked() bool {
	b := c.blocked.Load()
	return b != nil && b.Load()
}

// close closes the connection and stops further dials.
func (c *connector) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.conn != nil && !c.conn.IsClosed() {
		if err := c.conn.Close(); err != nil && err != amqp.ErrClosed {
			return wrap("close connection", err)
		}
	}
	return nil
}

// bounded runs f, broker calls that amqp091 cannot cancel, and returns its
// result, or ctx.Err() as soon as ctx ends. An abandoned f runs on until the
// broker answers or the heartbeat declares the connection dead; then
// abandoned, if not nil, releases what it made.
func bounded[T any](ctx context.Context, f func() (T, error), abandoned func(T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		if abandoned != nil {
			go func() {
				r := <-done
				abandoned(r.v, r.err)
			}()
		}
		var zero T
		return zero, ctx.Err()
	}
}
