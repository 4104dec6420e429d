package rabbitbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// standbyPoll is how often an ordered consumer that another one of its group
// holds back tries to take over.
const standbyPoll = time.Second

// errLocked: another ordered consumer of the group holds the queue's lock.
var errLocked = errors.New("amqp: another ordered consumer of the group is active")

// receiver is the driver.Receiver of one Consumer: one connection, a channel
// per subscription.
type receiver struct {
	c    *connector
	opts Options
	co   broker.ConsumerOptions
	topo topology

	mu       sync.Mutex
	inFlight map[string]*atomic.Int64 // queue -> deliveries this receiver holds unsettled
	ordered  map[string]*subscription // queue -> the ordered subscription of this receiver consuming it
}

func newReceiver(c *connector, o Options, co broker.ConsumerOptions) *receiver {
	return &receiver{
		c: c, opts: o, co: co,
		topo:     topology{deliveryLimit: o.DeliveryLimit},
		inFlight: map[string]*atomic.Int64{},
		ordered:  map[string]*subscription{},
	}
}

// Features: every group has its own queue (fan-out); per-key order holds
// because an ordered group has one active consumer at a time, the others
// standing by; a nack is a delayed per-message reject with requeue.
func (r *receiver) Features() driver.Features {
	return driver.Features{
		Capabilities:   broker.Capabilities{FanOut: true, OrderedByKey: true},
		NackRedelivers: true,
	}
}

func (r *receiver) Close() error { return r.c.close() }

func (r *receiver) counter(queue string) *atomic.Int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.inFlight[queue]
	if n == nil {
		n = new(atomic.Int64)
		r.inFlight[queue] = n
	}
	return n
}

// Subscribe declares the topology of topic and group and starts consuming.
// When the broker is unreachable at this moment the subscription is returned
// anyway and connects in Receive; a refused declaration (other arguments,
// permissions) is returned as an error.
func (r *receiver) Subscribe(ctx context.Context, topic string, cfg driver.SubscribeConfig) (driver.Subscription, error) {
	o := cfg.Options
	if err := checkNames(topic, o.Group); err != nil {
		return nil, err
	}
	q := QueueName(topic, o.Group)
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &subscription{
		r:        r,
		topic:    topic,
		queue:    q,
		ordered:  o.OrderByKey,
		qos:      2 * max(cfg.Prefetch, 1),
		log:      log.With("adapter", name, "queue", q),
		inFlight: r.counter(q),
		held:     map[*held]struct{}{},
	}
	err := s.connect(ctx)
	switch {
	case err == nil, errors.Is(err, errLocked):
	case ctx.Err() != nil:
		_ = s.Close()
		return nil, ctx.Err()
	case isFatal(err):
		_ = s.Close()
		return nil, err
	default:
		s.log.Warn("amqp: broker unreachable at subscribe; will keep trying", "error", err)
	}
	return s, nil
}

// subscription consumes one queue. Receive runs in one goroutine; Ack, Nack
// and Close may run concurrently with it.
type subscription struct {
	r        *receiver
	topic    string
	queue    string
	ordered  bool
	qos      int
	log      *slog.Logger
	inFlight *atomic.Int64

	mu      sync.Mutex
	cur     *consumerChan // nil while disconnected
	closed  bool
	held    map[*held]struct{} // nacked deliveries waiting out their delay
	standby bool               // logged that it stands by
}

// consumerChan is one channel consuming the queue; deliveries carry it, so an
// ack never reaches a later channel whose delivery tags mean other messages.
type consumerChan struct {
	ch         *amqp.Channel
	lock       *amqp.Channel // ordered: the channel that declared the lock queue
	deliveries <-chan amqp.Delivery
	closes     chan *amqp.Error
	acks       *acker
}

// held is a delivery nacked with a delay: it stays unacknowledged until its
// timer rejects it with requeue.
type held struct {
	d     *delivery
	timer *time.Timer
}

// delivery is a driver.Delivery with its handle in one allocation.
type delivery struct {
	dd  driver.Delivery
	msg broker.Message
	cc  *consumerChan
	tag uint64
}

// connect opens a channel, declares the topology and starts consuming. An
// ordered subscription first takes its queue's lock: it returns errLocked
// while another ordered consumer of the group holds it.
func (s *subscription) connect(ctx context.Context) error {
	conn, err := s.r.c.get(ctx)
	if err != nil {
		return err
	}
	cc, err := bounded(ctx, func() (*consumerChan, error) { return s.open(conn) },
		func(cc *consumerChan, err error) {
			if err == nil {
				cc.close(s.queue, true)
			}
		})
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cc.close(s.queue, true)
		return fmt.Errorf("amqp: consume %q: %w", s.queue, broker.ErrClosed)
	}
	s.cur = cc
	s.mu.Unlock()
	return nil
}

// open makes a consumer channel on conn: lock (when ordered), declarations,
// prefetch, consume.
func (s *subscription) open(conn *amqp.Connection) (*consumerChan, error) {
	cc := &consumerChan{}
	var err error
	if s.ordered {
		if cc.lock, err = s.lock(conn); err != nil {
			return nil, err
		}
	}
	if cc.ch, err = conn.Channel(); err != nil {
		cc.close(s.queue, false)
		return nil, unavailable("open a channel", err)
	}
	if err = s.r.topo.declare(cc.ch, s.topic, s.group()); err != nil {
		cc.close(s.queue, false)
		return nil, err
	}
	if err = cc.ch.Qos(s.qos, 0, false); err != nil {
		cc.close(s.queue, false)
		return nil, wrap("set prefetch", err)
	}
	cc.closes = cc.ch.NotifyClose(make(chan *amqp.Error, 1))
	if cc.deliveries, err = cc.ch.Consume(s.queue, "", false, false, false, false, nil); err != nil {
		cc.close(s.queue, false)
		return nil, wrap(fmt.Sprintf("consume queue %q", s.queue), err)
	}
	cc.acks = newAcker(cc.ch, s.qos/4)
	return cc, nil
}

func (s *subscription) group() string { return s.queue[len(s.topic)+1:] }

// lock declares the queue's exclusive lock queue: RabbitMQ lets one connection
// hold an exclusive queue and deletes it when that connection closes, which
// makes it a lock that a crashed holder cannot keep. Another subscription of
// this receiver (same connection) is checked locally.
func (s *subscription) lock(conn *amqp.Connection) (*amqp.Channel, error) {
	s.r.mu.Lock()
	if o := s.r.ordered[s.queue]; o != nil && o != s {
		s.r.mu.Unlock()
		return nil, errLocked
	}
	s.r.ordered[s.queue] = s
	s.r.mu.Unlock()
	ch, err := conn.Channel()
	if err != nil {
		return nil, unavailable("open a channel", err)
	}
	if _, err := ch.QueueDeclare(s.queue+lockSuffix, false, true, true, false, nil); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.ResourceLocked {
			return nil, errLocked
		}
		_ = ch.Close()
		return nil, wrap(fmt.Sprintf("declare lock queue %q", s.queue+lockSuffix), err)
	}
	return ch, nil
}

// close closes the consumer channel, which returns its unacknowledged
// deliveries to the queue, and then, if unlock, releases the lock.
func (cc *consumerChan) close(queue string, unlock bool) {
	if cc.acks != nil {
		cc.acks.close() // sends the acks still waiting, before the channel goes
	}
	if cc.ch != nil {
		_ = cc.ch.Close()
	}
	if cc.lock != nil {
		if unlock {
			_, _ = cc.lock.QueueDelete(queue+lockSuffix, false, false, false)
		}
		_ = cc.lock.Close()
	}
}

func (s *subscription) current() *consumerChan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Receive waits for deliveries and returns up to max. When the channel or
// connection dropped, it returns an error wrapping broker.ErrUnavailable, and
// the next call reconnects; an ordered subscription held back by another
// consumer of its group waits here, polling, until it takes over.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	cc := s.current()
	for cc == nil {
		err := s.connect(ctx)
		if err == nil {
			cc = s.current()
			if s.standby {
				s.log.Info("amqp: took over as the group's ordered consumer")
				s.standby = false
			}
			continue
		}
		if !errors.Is(err, errLocked) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !isFatal(err) && !errors.Is(err, broker.ErrUnavailable) {
				// Not found and the like, right after a broker restart: retry.
				err = unavailable("reconnect", err)
			}
			return nil, err
		}
		if !s.standby {
			s.log.Info("amqp: standing by: another ordered consumer of the group is active")
			s.standby = true
		}
		t := time.NewTimer(standbyPoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	var out []*driver.Delivery
	select {
	case d, ok := <-cc.deliveries:
		if !ok {
			return nil, s.drop(cc)
		}
		out = append(make([]*driver.Delivery, 0, max), s.convert(cc, d))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for len(out) < max {
		select {
		case d, ok := <-cc.deliveries:
			if !ok {
				return out, nil // the next call reports the drop
			}
			out = append(out, s.convert(cc, d))
		default:
			return out, nil
		}
	}
	return out, nil
}

// drop forgets a consumer channel whose deliveries ended (channel or
// connection closed, or the broker cancelled the consumer) and says why.
func (s *subscription) drop(cc *consumerChan) error {
	s.mu.Lock()
	if s.cur == cc {
		s.cur = nil
	}
	s.mu.Unlock()
	var cause *amqp.Error
	select {
	case cause = <-cc.closes:
	default:
	}
	cc.close(s.queue, false)
	if cause == nil {
		return unavailable(fmt.Sprintf("consumer of queue %q stopped; reconnecting", s.queue), nil)
	}
	return unavailable(fmt.Sprintf("consumer of queue %q stopped; reconnecting", s.queue), cause)
}

// Ack acknowledges one delivery; the channel's acker sends it, grouped with
// others (Close flushes). If the channel closed meanwhile, the broker has
// already put the message back, and the error says so.
func (s *subscription) Ack(ctx context.Context, d *driver.Delivery) error {
	dl := d.Handle.(*delivery)
	s.inFlight.Add(-1)
	if dl.cc.ch.IsClosed() {
		return unavailable("ack: the channel closed, so the broker will redeliver", nil)
	}
	dl.cc.acks.ack(dl.tag)
	return nil
}

// Nack holds the delivery for delay, then rejects it with requeue, which puts
// it back at the head of the quorum queue and counts a delivery. Holding it
// keeps it invisible to every consumer in the meantime, the way a visibility
// timeout would, and keeps the broker's delivery count, which a republished
// copy in a delay queue would lose.
func (s *subscription) Nack(ctx context.Context, d *driver.Delivery, delay time.Duration) error {
	dl := d.Handle.(*delivery)
	if delay <= 0 {
		return s.reject(dl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.reject(dl)
	}
	h := &held{d: dl}
	s.held[h] = struct{}{}
	dl.cc.acks.hold(dl.tag)
	// Set under s.mu, which the timer's function takes first: it sees h.
	h.timer = time.AfterFunc(delay, func() {
		s.mu.Lock()
		_, mine := s.held[h]
		delete(s.held, h)
		s.mu.Unlock()
		if mine {
			if err := s.reject(dl); err != nil {
				s.log.Debug("amqp: delayed reject failed; the broker redelivers anyway", "id", dl.msg.ID, "error", err)
			}
		}
	})
	return nil
}

func (s *subscription) reject(dl *delivery) error {
	s.inFlight.Add(-1)
	if err := dl.cc.ch.Reject(dl.tag, true); err != nil {
		return unavailable("reject: the channel closed, so the broker will redeliver", err)
	}
	dl.cc.acks.settled(dl.tag)
	return nil
}

// Close rejects the deliveries still waiting out a nack delay, closes the
// channel (the broker requeues what was not acknowledged) and releases the
// ordered lock.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	waiting := s.held
	s.held = map[*held]struct{}{}
	cc := s.cur
	s.cur = nil
	s.mu.Unlock()
	for h := range waiting {
		h.timer.Stop()
		_ = s.reject(h.d)
	}
	if cc != nil {
		cc.close(s.queue, true)
	}
	if s.ordered {
		s.r.mu.Lock()
		if s.r.ordered[s.queue] == s {
			delete(s.r.ordered, s.queue)
		}
		s.r.mu.Unlock()
	}
	return nil
}
