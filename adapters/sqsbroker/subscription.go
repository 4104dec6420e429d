package sqsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// settleTimeout bounds one delete, visibility change or release that runs
// after the caller's context may have ended.
const settleTimeout = 30 * time.Second

// maxReceiveBatch is the SQS limit on messages per ReceiveMessage.
const maxReceiveBatch = 10

var receiveSystemAttributes = []types.MessageSystemAttributeName{
	types.MessageSystemAttributeNameApproximateReceiveCount,
	types.MessageSystemAttributeNameSentTimestamp,
	types.MessageSystemAttributeNameMessageGroupId,
}

// initialLease is the visibility timeout ReceiveMessage asks for (or
// VisibilityTimeout if shorter); a message held longer than half of it is
// extended to the full VisibilityTimeout. It is short because a long poll
// that is abandoned (the consumer stops, the process exits) can still take
// messages on the server, which then stay hidden for that first lease.
const initialLease = 5 * time.Second

// handle is a delivery's receipt, and its visibility lease.
type handle struct {
	receipt string
	expires time.Time     // when the message becomes visible again; guarded by subscription.mu
	lease   time.Duration // the visibility timeout last set; guarded by subscription.mu
}

// subscription receives one queue's messages with long-polling
// ReceiveMessage calls. It holds at most limit messages at once (received
// and not yet acknowledged or handed back), so it never takes from the queue
// more than the consumer can work on, and keeps their visibility timeout
// extended while they are held.
type subscription struct {
	b       *Broker
	q       *queue
	log     *slog.Logger
	limit   int
	pollers int
	vt      time.Duration // VisibilityTimeout, the lease of a message held a while
	lease0  time.Duration // the first lease, set by ReceiveMessage

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu        sync.Mutex
	buf       []*driver.Delivery // received, not yet returned by Receive
	held      map[*handle]struct{}
	requested int // messages asked for by the polls in flight
	polling   int // polls in flight
	err       error
	closed    bool
	wake      chan struct{} // signalled when buf, err or the credit changes
	polls     sync.WaitGroup

	extendMu   sync.RWMutex // written while visibility is being extended, read by Nack
	extendDone chan struct{}
	acks       *acker
}

var _ driver.Subscription = (*subscription)(nil)

func newSubscription(b *Broker, q *queue, cfg driver.SubscribeConfig) *subscription {
	limit := max(cfg.Prefetch, 1)
	pollers := b.opts.Pollers
	if pollers == 0 {
		pollers = min(max((limit+maxReceiveBatch-1)/maxReceiveBatch, 1), 10)
	}
	s := &subscription{
		b:          b,
		q:          q,
		log:        cfg.Options.Logger.With("adapter", name, "topic", q.topic),
		limit:      limit,
		pollers:    pollers,
		vt:         b.opts.VisibilityTimeout,
		lease0:     min(b.opts.VisibilityTimeout, initialLease),
		held:       map[*handle]struct{}{},
		wake:       make(chan struct{}, 1),
		extendDone: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.acks = &acker{s: s, sem: make(chan struct{}, pollers+1)}
	go s.extendLoop()
	return s
}

func (s *subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Receive returns received messages, starting polls as the credit allows.
// Polls run with ctx, so they stop when it ends.
func (s *subscription) Receive(ctx context.Context, most int) ([]*driver.Delivery, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, fmt.Errorf("sqs: receive from %q: %w", s.q.topic, broker.ErrClosed)
		}
		s.startPollsLocked(ctx)
		if len(s.buf) > 0 {
			n := min(most, len(s.buf))
			out := make([]*driver.Delivery, n)
			copy(out, s.buf)
			s.buf = append(s.buf[:0], s.buf[n:]...)
			s.mu.Unlock()
			return out, nil
		}
		if err := s.err; err != nil {
			s.err = nil
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// startPollsLocked starts polls while the credit allows. A poll asks for a
// full batch (10, or the whole window when smaller); a smaller one only when
// no poll is in flight, so that the credit is not frittered away on many
// small receives.
func (s *subscription) startPollsLocked(ctx context.Context) {
	full := min(maxReceiveBatch, s.limit)
	for s.polling < s.pollers {
		n := min(maxReceiveBatch, s.limit-len(s.held)-s.requested)
		if n <= 0 || n < full && s.polling > 0 {
			return
		}
		s.polling++
		s.requested += n
		s.polls.Add(1)
		go s.poll(ctx, n)
	}
}

// poll makes one ReceiveMessage call for up to n messages.
func (s *subscription) poll(ctx context.Context, n int) {
	defer s.polls.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	start := time.Now()
	out, err := s.b.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(s.q.url),
		MaxNumberOfMessages:         int32(n),
		WaitTimeSeconds:             int32(s.b.opts.WaitTime / time.Second),
		VisibilityTimeout:           int32(s.lease0 / time.Second),
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: receiveSystemAttributes,
	})
	var ds []*driver.Delivery
	if err == nil {
		ds = make([]*driver.Delivery, 0, len(out.Messages))
		for _, sm := range out.Messages {
			m, derr := decode(s.q.topic, sm)
			if derr != nil {
				s.log.Warn("sqs: received message is malformed; delivering it as it is", "id", m.ID, "error", derr)
			}
			h := &handle{receipt: aws.ToString(sm.ReceiptHandle), expires: start.Add(s.lease0), lease: s.lease0}
			ds = append(ds, &driver.Delivery{Message: m, Handle: h})
		}
	}
	s.mu.Lock()
	s.polling--
	s.requested -= n
	for _, d := range ds {
		s.held[d.Handle.(*handle)] = struct{}{}
	}
	s.buf = append(s.buf, ds...)
	if err != nil && ctx.Err() == nil && s.err == nil {
		s.err = wrap("receive from", s.q.topic, err)
		if errors.Is(s.err, broker.ErrFull) { // too many in flight: wait for some to settle
			s.err = fmt.Errorf("%w: %w", broker.ErrUnavailable, s.err)
		}
		s.b.forget(s.q.topic, s.err)
	}
	s.mu.Unlock()
	s.signal()
}

// settle stops holding h: it no longer counts against the credit nor has its
// visibility extended. It reports false if h was already settled.
func (s *subscription) settle(h *handle) bool {
	s.mu.Lock()
	_, ok := s.held[h]
	delete(s.held, h)
	s.mu.Unlock()
	s.signal()
	return ok
}

// Ack queues the message for a batched DeleteMessageBatch.
func (s *subscription) Ack(ctx context.Context, d *driver.Delivery) error {
	h := d.Handle.(*handle)
	if s.settle(h) {
		s.acks.add(h.receipt)
	}
	return nil
}

// Nack makes the message visible again after delay (rounded up to whole
// seconds, at most 12 hours) with ChangeMessageVisibility.
func (s *subscription) Nack(ctx context.Context, d *driver.Delivery, delay time.Duration) error {
	h := d.Handle.(*handle)
	if !s.settle(h) {
		return nil
	}
	// Not during an extension, which could hide the message again for a whole
	// visibility timeout after this call.
	s.extendMu.RLock()
	defer s.extendMu.RUnlock()
	_, err := s.b.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(s.q.url),
		ReceiptHandle:     aws.String(h.receipt),
		VisibilityTimeout: visibilitySeconds(delay),
	})
	return wrap("hand back a message to", s.q.topic, err)
}

func visibilitySeconds(d time.Duration) int32 {
	return int32(min(math.Ceil(d.Seconds()), maxVisibility.Seconds()))
}

// extendLoop extends the visibility of held messages whose lease is more
// than half gone, checking every third of the first lease.
func (s *subscription) extendLoop() {
	defer close(s.extendDone)
	t := time.NewTicker(s.lease0 / 3)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.extend()
		}
	}
}

func (s *subscription) extend() {
	s.extendMu.Lock()
	defer s.extendMu.Unlock()
	now := time.Now()
	var due []*handle
	s.mu.Lock()
	for h := range s.held {
		if h.expires.Sub(now) < h.lease/2 {
			due = append(due, h)
		}
	}
	s.mu.Unlock()
	for len(due) > 0 {
		n := min(len(due), maxPublishBatch)
		batch := due[:n]
		due = due[n:]
		in := &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(s.q.url)}
		for i, h := range batch {
			in.Entries = append(in.Entries, types.ChangeMessageVisibilityBatchRequestEntry{
				Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h.receipt), VisibilityTimeout: int32(s.vt / time.Second)})
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.lease0/3)
		out, err := s.b.api.ChangeMessageVisibilityBatch(ctx, in)
		cancel()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("sqs: extending the visibility timeout failed; messages may be redelivered while being handled",
					"messages", len(batch), "error", wrap("extend visibility in", s.q.topic, err))
			}
			continue
		}
		failed := map[string]bool{}
		for _, f := range out.Failed {
			failed[aws.ToString(f.Id)] = true
			s.log.Warn("sqs: extending the visibility timeout of a message failed; it may be redelivered while being handled",
				"error", entryError("extend visibility in", s.q.topic, aws.ToString(f.Code), aws.ToString(f.Message), f.SenderFault))
		}
		s.mu.Lock()
		for i, h := range batch {
			if !failed[strconv.Itoa(i)] {
				h.expires, h.lease = now.Add(s.vt), s.vt
			}
		}
		s.mu.Unlock()
	}
}

// Close stops polling, hands back the messages never returned by Receive,
// and deletes the acknowledged ones that are still pending.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.polls.Wait()
	<-s.extendDone
	s.mu.Lock()
	rest := s.buf
	s.buf = nil
	for _, d := range rest {
		delete(s.held, d.Handle.(*handle))
	}
	s.mu.Unlock()
	s.signal()
	return errors.Join(s.release(rest), s.acks.close())
}

// release makes deliveries visible again at once.
func (s *subscription) release(ds []*driver.Delivery) error {
	var errs []error
	for len(ds) > 0 {
		n := min(len(ds), maxPublishBatch)
		in := &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(s.q.url)}
		for i, d := range ds[:n] {
			in.Entries = append(in.Entries, types.ChangeMessageVisibilityBatchRequestEntry{
				Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(d.Handle.(*handle).receipt)})
		}
		ds = ds[n:]
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		out, err := s.b.api.ChangeMessageVisibilityBatch(ctx, in)
		cancel()
		if err != nil {
			errs = append(errs, wrap("hand back messages to", s.q.topic, err))
			continue
		}
		for _, f := range out.Failed {
			errs = append(errs, entryError("hand back a message to", s.q.topic, aws.ToString(f.Code), aws.ToString(f.Message), f.SenderFault))
		}
	}
	return errors.Join(errs...)
}
