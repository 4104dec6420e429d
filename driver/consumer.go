package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/dlq"
	"github.com/brokerkit/broker/internal/deadline"
)

// settleTimeout bounds one Ack, Nack or dead-letter publish that happens after
// the Consume context may have ended.
const settleTimeout = 30 * time.Second

// maxReasonBytes bounds the dead-letter reason header, so that a long error
// cannot push the copy over the broker's size limit.
const maxReasonBytes = 1024

// Consumer is the portable broker.Consumer over a Receiver.
type Consumer struct {
	name  string
	r     Receiver
	dead  Sender
	opts  broker.ConsumerOptions
	feats Features

	mu      sync.Mutex // guards closed and running.Add
	closed  bool
	closing chan struct{}
	running sync.WaitGroup
}

var _ broker.Consumer = (*Consumer)(nil)

// NewConsumer returns a Consumer that receives through r and publishes dead
// letters through dead; it owns both. Options are validated here, so a consumer
// asking for what the adapter cannot do fails at start-up: OrderByKey on a
// receiver without OrderedByKey gives an error wrapping ErrUnsupported.
func NewConsumer(name string, r Receiver, dead Sender, opts broker.ConsumerOptions) (*Consumer, error) {
	if r == nil || dead == nil {
		return nil, fmt.Errorf("%s: NewConsumer needs a Receiver and a dead-letter Sender: %w", name, broker.ErrInvalidArgument)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	opts = opts.WithDefaults()
	feats := r.Features()
	if opts.OrderByKey && !feats.OrderedByKey {
		return nil, fmt.Errorf("%s: OrderByKey: this adapter cannot keep per-key order: %w", name, broker.ErrUnsupported)
	}
	return &Consumer{name: name, r: r, dead: dead, opts: opts, feats: feats, closing: make(chan struct{})}, nil
}

// Capabilities reports what the adapter under the consumer supports; see
// broker.CapabilitiesOf.
func (c *Consumer) Capabilities() broker.Capabilities { return c.feats.Capabilities }

// Options returns the consumer's options with defaults applied.
func (c *Consumer) Options() broker.ConsumerOptions { return c.opts }

// Consume implements broker.Consumer.
func (c *Consumer) Consume(ctx context.Context, topic string, h broker.Handler) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return fmt.Errorf("%s: consume: %w", c.name, err)
	}
	if h == nil {
		return fmt.Errorf("%s: consume %q: nil handler: %w", c.name, topic, broker.ErrInvalidArgument)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("%s: consume %q: %w", c.name, topic, broker.ErrClosed)
	}
	c.running.Add(1)
	c.mu.Unlock()
	defer c.running.Done()

	if err := ctx.Err(); err != nil {
		return err
	}
	prefetch := 2 * c.opts.Concurrency
	if c.feats.Buffered > prefetch {
		prefetch = c.feats.Buffered
	}
	sub, err := c.subscribe(ctx, topic, SubscribeConfig{Options: c.opts, Prefetch: prefetch})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, broker.ErrClosed) {
			return nil // closed while waiting for the broker: nothing was received
		}
		return fmt.Errorf("%s: consume %q: %w", c.name, topic, err)
	}
	// Acks and nacks outlive ctx (draining), bounded by settleTimeout each,
	// and end when the run has closed its subscription.
	settleBase, endSettles := context.WithCancel(context.WithoutCancel(ctx))
	defer endSettles()
	r := &run{
		c:       c,
		topic:   topic,
		sub:     sub,
		h:       h,
		log:     c.opts.Logger.With("adapter", c.name, "topic", topic, "group", c.opts.Group),
		bg:      context.WithoutCancel(ctx),
		settle:  deadline.NewShared(settleBase, settleTimeout),
		window:  newWindow(prefetch),
		queue:   make(chan *Delivery, prefetch),
		workers: make(chan struct{}, c.opts.Concurrency),
		keys:    map[string][]*Delivery{},
	}
	r.fetchCtx, r.stopFetch = context.WithCancel(ctx)
	r.handlerCtx, r.cancelHandlers = context.WithCancel(ctx)
	return r.loop(ctx)
}

// subscribe subscribes, waiting out a broker that is not reachable yet (a
// service may start before its broker): an error wrapping ErrUnavailable is
// logged and retried with a growing pause until ctx ends or Close is called.
func (c *Consumer) subscribe(ctx context.Context, topic string, cfg SubscribeConfig) (Subscription, error) {
	pause := time.Duration(0)
	for {
		sub, err := c.r.Subscribe(ctx, topic, cfg)
		if err == nil || !errors.Is(err, broker.ErrUnavailable) {
			return sub, err
		}
		pause = min(2*pause+100*time.Millisecond, 5*time.Second)
		c.opts.Logger.Warn("broker: subscribe failed; retrying", "adapter", c.name, "topic", topic, "group", c.opts.Group, "error", err, "pause", pause)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-c.closing:
			t.Stop()
			return nil, broker.ErrClosed
		}
	}
}

// Close implements broker.Consumer: running Consume calls stop fetching, drain
// and return nil; then the receiver and dead-letter sender are closed.
func (c *Consumer) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	c.mu.Unlock()
	c.running.Wait()
	return errors.Join(c.r.Close(), c.dead.Close())
}

// Stats implements broker.StatsReader when the Receiver does; group "" means
// this consumer's group.
func (c *Consumer) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	if group == "" {
		group = c.opts.Group
	}
	if sr, ok := c.r.(StatsReader); ok {
		return sr.Stats(ctx, topic, group)
	}
	return broker.Stats{}, fmt.Errorf("%s: stats: %w", c.name, broker.ErrUnsupported)
}

// run is one Consume call.
type run struct {
	c      *Consumer
	topic  string
	sub    Subscription
	h      broker.Handler
	log    *slog.Logger
	bg     context.Context  // for settling after ctx ended
	settle *deadline.Shared // deadlines for Ack and Nack

	fetchCtx       context.Context // ends on Close or when the Consume ctx ends
	stopFetch      context.CancelFunc
	handlerCtx     context.Context // ends when the Consume ctx ends or draining timed out
	cancelHandlers context.CancelFunc

	window *window        // deliveries held, at most prefetch
	inline bool           // the fetch loop runs the handler (see loop)
	queue  chan *Delivery // unordered deliveries waiting for a worker
	// slots bounds the running handlers with a token each in workers. Only
	// ordered mode needs it, whose keys each get a goroutine; otherwise the
	// Concurrency workers (or the inline fetch loop) are the bound.
	slots   bool
	workers chan struct{}
	wg      sync.WaitGroup

	mu   sync.Mutex
	keys map[string][]*Delivery // ordered mode: deliveries waiting behind a busy key
}

func (r *run) loop(ctx context.Context) error {
	// With one handler at a time, no per-key ordering, and a receiver that
	// fetches ahead by itself, the fetch loop runs the handler itself: a
	// worker goroutine would add a hand-off per message and overlap nothing.
	r.inline = r.c.opts.Concurrency == 1 && !r.c.opts.OrderByKey && r.c.feats.Buffered > 0
	r.slots = r.c.opts.OrderByKey
	if !r.inline {
		r.startWorkers()
	}
	drained := make(chan struct{})
	defer close(drained)
	go r.boundDrain(drained)

	var fatal error
	pause := time.Duration(0)
fetch:
	for {
		n, ok := r.window.room(r.fetchCtx)
		if !ok {
			break fetch
		}
		ds, err := r.sub.Receive(r.fetchCtx, n)
		r.window.hold(len(ds))
		for _, d := range ds {
			if r.inline {
				r.process(d)
			} else {
				r.dispatch(d)
			}
		}
		switch {
		case err == nil:
			pause = 0
		case r.fetchCtx.Err() != nil:
			break fetch
		case errors.Is(err, broker.ErrUnavailable):
			pause = min(2*pause+100*time.Millisecond, 5*time.Second)
			r.log.Warn("broker: receive failed; retrying", "error", err, "pause", pause)
			if !Sleep(r.fetchCtx, pause) {
				break fetch
			}
		default:
			fatal = err
			break fetch
		}
	}
	r.stopFetch()
	close(r.queue)
	r.wg.Wait() // bounded by boundDrain; a ctx that ended has cancelled the handlers already
	r.cancelHandlers()
	if err := r.sub.Close(); err != nil {
		r.log.Error("broker: closing subscription failed; unacknowledged messages will be redelivered", "error", err)
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case fatal != nil:
		return fmt.Errorf("%s: consume %q: %w", r.c.name, r.topic, fatal)
	}
	return nil
}

// boundDrain stops fetching when the consumer is closed and, from the moment
// fetching stops for any reason, gives the running handlers (the inline one
// too) DrainTimeout to return before it cancels their context.
func (r *run) boundDrain(drained <-chan struct{}) {
	select {
	case <-r.c.closing:
		r.stopFetch()
	case <-r.fetchCtx.Done():
	}
	t := time.NewTimer(r.c.opts.DrainTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		r.log.Warn("broker: drain timeout; cancelling in-flight handlers", "timeout", r.c.opts.DrainTimeout)
		r.cancelHandlers()
	case <-drained:
	}
}

// startWorkers starts the goroutines that take unordered deliveries from
// r.queue, so that handlers start in the order messages were received.
func (r *run) startWorkers() {
	for range r.c.opts.Concurrency {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for d := range r.queue {
				r.process(d)
			}
		}()
	}
}

func (r *run) dispatch(d *Delivery) {
	key := d.Message.Key
	if !r.c.opts.OrderByKey || key == "" {
		r.queue <- d // never blocks: it has room for every prefetch slot
		return
	}
	r.mu.Lock()
	if q, busy := r.keys[key]; busy {
		r.keys[key] = append(q, d)
		r.mu.Unlock()
		return
	}
	r.keys[key] = nil
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for d != nil {
			r.process(d)
			r.mu.Lock()
			if q := r.keys[key]; len(q) > 0 {
				d, r.keys[key] = q[0], q[1:]
			} else {
				delete(r.keys, key)
				d = nil
			}
			r.mu.Unlock()
		}
	}()
}

// process runs the handler for d until d is settled: acknowledged,
// dead-lettered, handed back for redelivery, or released at shutdown.
func (r *run) process(d *Delivery) {
	defer r.window.release()
	m := d.Message
	if m.Attempt < 1 {
		m.Attempt = 1
	}
	opts := r.c.opts
	inProcess := !r.c.feats.NackRedelivers || (opts.OrderByKey && m.Key != "")
	var firstFailed time.Time
	for {
		if r.slots {
			select {
			case r.workers <- struct{}{}:
			case <-r.fetchCtx.Done():
				r.release(d)
				return
			}
		}
		if r.fetchCtx.Err() != nil { // stopping: do not start new work
			if r.slots {
				<-r.workers
			}
			r.release(d)
			return
		}
		err := r.call(m)
		if r.slots {
			<-r.workers
		}
		if err == nil {
			r.ack(d)
			return
		}
		if r.handlerCtx.Err() != nil { // cut short by shutdown: not the message's fault
			r.release(d)
			return
		}
		lastFailed := time.Now()
		if firstFailed.IsZero() {
			firstFailed = lastFailed
		}
		if broker.IsPermanent(err) || m.Attempt >= opts.MaxAttempts {
			if opts.DeadLetterIf == nil || opts.DeadLetterIf(m, err) {
				r.deadLetter(d, err, firstFailed, lastFailed, inProcess)
				return
			}
			r.log.Warn("broker: DeadLetterIf kept a failed message from the dead-letter topic; retrying",
				"id", m.ID, "attempt", m.Attempt, "error", err)
		}
		delay := opts.Backoff(m.Attempt)
		if !inProcess {
			r.nack(d, delay)
			return
		}
		if !Sleep(r.fetchCtx, delay) {
			r.release(d)
			return
		}
		m.Attempt++
	}
}

func (r *run) call(m *broker.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &broker.PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return r.h(r.handlerCtx, m)
}

// deadLetter publishes a copy of d to the dead-letter topic, then acks d. If the
// publish fails, d is not acknowledged: it is handed back for redelivery, or in
// process the publish is retried after a backoff until shutdown.
func (r *run) deadLetter(d *Delivery, cause error, first, last time.Time, inProcess bool) {
	m := d.Message
	cp := m.Clone()
	if cp.Headers == nil {
		cp.Headers = map[string]string{}
	}
	reason := cause.Error()
	if len(reason) > maxReasonBytes {
		reason = reason[:maxReasonBytes]
	}
	cp.Headers[dlq.HeaderOriginalTopic] = r.topic
	cp.Headers[dlq.HeaderGroup] = r.c.opts.Group
	cp.Headers[dlq.HeaderAttempts] = strconv.Itoa(m.Attempt)
	cp.Headers[dlq.HeaderReason] = reason
	cp.Headers[dlq.HeaderPermanent] = strconv.FormatBool(broker.IsPermanent(cause))
	cp.Headers[dlq.HeaderFirstFailedAt] = first.UTC().Format(time.RFC3339Nano)
	cp.Headers[dlq.HeaderLastFailedAt] = last.UTC().Format(time.RFC3339Nano)
	target := r.c.opts.DeadLetterTopicFor(r.topic)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(r.bg, settleTimeout)
		err := r.c.dead.Send(ctx, target, []*broker.Message{cp})
		cancel()
		if err == nil {
			r.log.Info("broker: message dead-lettered", "id", m.ID, "attempts", m.Attempt, "dead_letter_topic", target, "reason", reason)
			r.ack(d)
			return
		}
		r.log.Error("broker: dead-letter publish failed; message not acknowledged", "id", m.ID, "dead_letter_topic", target, "error", err)
		delay := r.c.opts.Backoff(try)
		if !inProcess {
			r.nack(d, delay)
			return
		}
		if !Sleep(r.fetchCtx, delay) {
			r.release(d)
			return
		}
	}
}

func (r *run) ack(d *Delivery) {
	if err := r.sub.Ack(r.settle.Context(), d); err != nil {
		r.log.Warn("broker: ack failed; the message will be redelivered", "id", d.Message.ID, "error", err)
	}
}

func (r *run) nack(d *Delivery, delay time.Duration) {
	if err := r.sub.Nack(r.settle.Context(), d, delay); err != nil {
		r.log.Warn("broker: nack failed; the message will be redelivered when its lease ends", "id", d.Message.ID, "error", err)
	}
}

// release hands back a delivery that was not (fully) handled because the
// consumer is stopping.
func (r *run) release(d *Delivery) { r.nack(d, 0) }

// Sleep waits for d or until ctx ends, reporting whether the full wait
// elapsed: the pause of an adapter's retry loop.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
