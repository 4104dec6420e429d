package rabbitbroker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
)

// maxShortString is the longest AMQP short string (message ID, routing key,
// header name), in bytes.
const maxShortString = 255

// sender is the driver.Sender: publishes with confirms over a pool of
// channels on one connection.
type sender struct {
	c    *connector
	opts Options
	topo topology

	declared sync.Map      // topic -> struct{}: its exchange and default queue exist
	declare  chan struct{} // a one-token semaphore: one declaration at a time

	pool   []atomic.Pointer[pubChannel]
	poolMu sync.Mutex // held while a pool slot's channel is being replaced
	next   atomic.Uint64
}

func newSender(c *connector, o Options) *sender {
	return &sender{
		c:       c,
		opts:    o,
		topo:    topology{deliveryLimit: o.DeliveryLimit},
		declare: make(chan struct{}, 1),
		pool:    make([]atomic.Pointer[pubChannel], o.ChannelPool),
	}
}

func (s *sender) MaxMessageSize() int { return s.opts.MaxMessageSize }

// Close closes the connection, which closes its channels. The engine calls it
// when no Send is running.
func (s *sender) Close() error { return s.c.close() }

// Send publishes msgs to topic's exchange, pipelined on one channel up to the
// confirm window, and returns when the broker confirmed every one. Unroutable
// (returned) and nacked messages, and those whose channel closed before their
// confirm, are named in a *broker.PublishError.
func (s *sender) Send(ctx context.Context, topic string, msgs []*broker.Message) error {
	for i, m := range msgs {
		if err := checkMessage(m); err != nil {
			return fmt.Errorf("amqp: publish to %q: message #%d: %w", topic, i, err)
		}
	}
	if err := s.ensureTopic(ctx, topic); err != nil {
		return err
	}
	if s.c.isBlocked() {
		return fmt.Errorf("amqp: publish to %q: the broker blocked publishing (a memory or disk alarm): %w", topic, broker.ErrUnavailable)
	}
	pc, err := s.channel(ctx)
	if err != nil {
		return err
	}
	b := newBatch(len(msgs))
	now := time.Now()
	reopened := false
	for i := 0; i < len(msgs); i++ {
		err := pc.publish(ctx, b, i, topic, msgs[i], now)
		if err != nil && !reopened && ctx.Err() == nil && pc.isClosed() {
			// The channel closed under us (a dropped connection): what was not
			// sent yet can go on a fresh one without risk of duplicates.
			reopened = true
			if pc, err = s.channel(ctx); err == nil {
				i--
				continue
			}
		}
		if err != nil {
			for j := i; j < len(msgs); j++ {
				b.finish(j, err)
			}
			break
		}
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.result(topic, msgs)
}

// checkMessage refuses what AMQP cannot encode, before anything is sent.
func checkMessage(m *broker.Message) error {
	if len(m.ID) > maxShortString {
		return fmt.Errorf("ID of %d bytes is over AMQP's %d: %w", len(m.ID), maxShortString, broker.ErrInvalidArgument)
	}
	for k := range m.Headers {
		if len(k) > maxShortString {
			return fmt.Errorf("header name of %d bytes is over AMQP's %d: %w", len(k), maxShortString, broker.ErrInvalidArgument)
		}
	}
	return nil
}

// ensureTopic declares topic's exchange and its default group's queue once per
// sender, so messages published before any consumer ran are kept.
func (s *sender) ensureTopic(ctx context.Context, topic string) error {
	if _, ok := s.declared.Load(topic); ok {
		return nil
	}
	if err := checkNames(topic, broker.DefaultGroup); err != nil {
		return err
	}
	select {
	case s.declare <- struct{}{}:
		defer func() { <-s.declare }()
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, ok := s.declared.Load(topic); ok {
		return nil
	}
	conn, err := s.c.get(ctx)
	if err != nil {
		return err
	}
	if _, err := bounded(ctx, func() (struct{}, error) {
		ch, err := conn.Channel()
		if err != nil {
			return struct{}{}, unavailable("open a channel", err)
		}
		defer func() { _ = ch.Close() }()
		return struct{}{}, s.topo.declare(ch, topic, broker.DefaultGroup)
	}, nil); err != nil {
		return err
	}
	s.declared.Store(topic, struct{}{})
	return nil
}

// forget drops the record of declared topics, so the next publishes declare
// them again: after a message came back unroutable or an exchange was missing.
func (s *sender) forget() { s.declared.Clear() }

// channel returns a live channel of the pool, round robin, opening one in
// place of a closed one.
func (s *sender) channel(ctx context.Context) (*pubChannel, error) {
	i := int(s.next.Add(1) % uint64(len(s.pool)))
	if pc := s.pool[i].Load(); pc != nil && !pc.isClosed() {
		return pc, nil
	}
	conn, err := s.c.get(ctx)
	if err != nil {
		return nil, err
	}
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if pc := s.pool[i].Load(); pc != nil && !pc.isClosed() {
		return pc, nil
	}
	pc, err := bounded(ctx, func() (*pubChannel, error) { return openPubChannel(s, conn) },
		func(pc *pubChannel, err error) {
			if err == nil {
				_ = pc.ch.Close()
			}
		})
	if err != nil {
		return nil, err
	}
	s.pool[i].Store(pc)
	return pc, nil
}

// batch collects the outcome of one Send.
type batch struct {
	left atomic.Int32
	errs []error
	done chan struct{}
}

func newBatch(n int) *batch {
	b := &batch{errs: make([]error, n), done: make(chan struct{})}
	b.left.Store(int32(n))
	return b
}

// finish records the outcome of message i; each i is finished exactly once.
func (b *batch) finish(i int, err error) {
	b.errs[i] = err
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

func (b *batch) result(topic string, msgs []*broker.Message) error {
	var pe *broker.PublishError
	for i, err := range b.errs {
		if err == nil {
			continue
		}
		if pe == nil {
			pe = &broker.PublishError{Topic: topic}
		}
		pe.Failed = append(pe.Failed, broker.FailedMessage{Index: i, ID: msgs[i].ID, Err: err})
	}
	if pe == nil {
		return nil
	}
	return pe
}

// pubChannel is one confirm-mode channel of the pool. One goroutine reads its
// returns and confirms, in the order the broker sent them: a basic.return
// precedes the basic.ack of the same message, so by the time a confirm is
// handled, the return of that message (if any) was recorded. Deferred
// confirmations alone cannot give that order, which is why they are not used.
type pubChannel struct {
	s      *sender
	ch     *amqp.Channel
	window chan struct{} // a token per message waiting for its confirm
	closed chan struct{} // closed when the channel closed

	pubMu sync.Mutex // serialises publishes, so sequence numbers follow send order

	mu      sync.Mutex // guards pending and err
	pending map[uint64]pending
	err     error // why the channel closed
}

// pending is a published message waiting for its confirm.
type pending struct {
	b        *batch
	i        int
	id       string
	size     int
	returned error
}

func openPubChannel(s *sender, conn *amqp.Connection) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, unavailable("open a publishing channel", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, wrap("enable publisher confirms", err)
	}
	w := s.opts.ConfirmWindow
	pc := &pubChannel{
		s:       s,
		ch:      ch,
		window:  make(chan struct{}, w),
		closed:  make(chan struct{}),
		pending: make(map[uint64]pending, w),
	}
	// Unbuffered: the connection's reader hands over each return before it
	// goes on to the confirm that follows it.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	// Room for every confirm the window allows, so the reader never waits.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, w))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	go pc.loop(returns, confirms, closes)
	return pc, nil
}

// isClosed reports whether the channel closed; amqp091 knows a moment before
// the confirm loop does.
func (pc *pubChannel) isClosed() bool {
	select {
	case <-pc.closed:
		return true
	default:
		return pc.ch.IsClosed()
	}
}

func (pc *pubChannel) loop(returns <-chan amqp.Return, confirms <-chan amqp.Confirmation, closes <-chan *amqp.Error) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			pc.returned(r)
		case c, ok := <-confirms:
			if !ok {
				var cause *amqp.Error
				select {
				case cause = <-closes:
				default:
				}
				pc.fail(cause)
				return
			}
			pc.confirmed(c)
		}
	}
}

// publish sends message i of b on the channel once the window has room. An
// error means it was not sent; otherwise the confirm loop settles it.
func (pc *pubChannel) publish(ctx context.Context, b *batch, i int, topic string, m *broker.Message, now time.Time) error {
	select {
	case pc.window <- struct{}{}:
	default:
		select {
		case pc.window <- struct{}{}:
		case <-pc.closed:
			return pc.closeErr()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	msg, key := publishing(m, now)
	pc.pubMu.Lock()
	seq := pc.ch.GetNextPublishSeqNo()
	pc.mu.Lock()
	if pc.err != nil {
		pc.mu.Unlock()
		pc.pubMu.Unlock()
		<-pc.window
		return pc.err
	}
	pc.pending[seq] = pending{b: b, i: i, id: m.ID, size: len(m.Body)}
	pc.mu.Unlock()
	err := pc.ch.Publish(topic, key, true, false, msg)
	pc.pubMu.Unlock()
	if err != nil {
		pc.mu.Lock()
		_, mine := pc.pending[seq]
		delete(pc.pending, seq)
		pc.mu.Unlock()
		if mine {
			<-pc.window
			return unavailable(fmt.Sprintf("publish to %q", topic), err)
		}
		// The channel closed meanwhile and fail settled it.
	}
	return nil
}

// returned records that the broker could not route a message (mandatory
// publishing): its confirm, which follows, will report the failure.
func (pc *pubChannel) returned(r amqp.Return) {
	pc.s.forget()
	err := fmt.Errorf("amqp: message returned by the broker (%d %s): no queue is bound to exchange %q: %w",
		r.ReplyCode, r.ReplyText, r.Exchange, broker.ErrNotFound)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	// The oldest unsettled publish of that ID; returns come in publish order.
	var best uint64
	for seq, p := range pc.pending {
		if p.id == r.MessageId && p.returned == nil && (best == 0 || seq < best) {
			best = seq
		}
	}
	if best != 0 {
		p := pc.pending[best]
		p.returned = err
		pc.pending[best] = p
	}
}

func (pc *pubChannel) confirmed(c amqp.Confirmation) {
	pc.mu.Lock()
	p, ok := pc.pending[c.DeliveryTag]
	delete(pc.pending, c.DeliveryTag)
	pc.mu.Unlock()
	if !ok {
		return
	}
	<-pc.window
	var err error
	switch {
	case !c.Ack:
		err = fmt.Errorf("amqp: the broker refused the message (nack: a queue is full or failed): %w", broker.ErrUnavailable)
	case p.returned != nil:
		err = p.returned
	}
	p.b.finish(p.i, err)
}

// fail settles every unconfirmed message when the channel closed. Their fate
// is unknown (the broker may have stored them), so they fail with
// ErrUnavailable and a retry may duplicate them: at-least-once. A message over
// the broker's max_message_size fails with ErrMessageTooLarge instead.
func (pc *pubChannel) fail(cause *amqp.Error) {
	var err error
	if cause != nil {
		err = unavailable("the channel closed before the broker confirmed the message", cause)
		if cause.Code == amqp.NotFound {
			pc.s.forget() // an exchange was deleted: declare again on the next publish
		}
	} else {
		err = unavailable("the channel closed before the broker confirmed the message", amqp.ErrClosed)
	}
	limit := -1
	if cause != nil && isSizeLimit(cause.Reason) {
		limit = parseMaxSize(cause.Reason)
	}
	pc.mu.Lock()
	pc.err = err
	settle := pc.pending
	pc.pending = map[uint64]pending{}
	pc.mu.Unlock()
	close(pc.closed)
	for _, p := range settle {
		e := err
		if limit >= 0 && p.size > limit {
			e = fmt.Errorf("amqp: message of %d bytes is over the broker's max_message_size %d: %w: %w",
				p.size, limit, broker.ErrMessageTooLarge, cause)
		}
		p.b.finish(p.i, e)
	}
}

func (pc *pubChannel) closeErr() error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.err
}

// parseMaxSize reads the limit from RabbitMQ's "message size N is larger than
// configured max size M" reason; -1 when it is not there.
func parseMaxSize(reason string) int {
	const marker = "configured max size "
	i := strings.Index(reason, marker)
	if i < 0 {
		return -1
	}
	rest := reason[i+len(marker):]
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}
