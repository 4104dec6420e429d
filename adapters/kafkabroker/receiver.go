package kafkabroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
	"github.com/segmentio/kafka-go"
)

const (
	// joinGroupBackoff is the pause before rejoining the group after a failed
	// join, for example while the broker restarts.
	joinGroupBackoff = time.Second
	// readerQueue is how many fetched messages a kafka-go Reader buffers ahead.
	readerQueue = 256
	// fetchMaxBytes bounds one partition fetch; the broker still returns a
	// larger first batch, so a big message never blocks a partition.
	fetchMaxBytes = 4 << 20
	// commitTimeout bounds one commit request, and the final commit on Close.
	commitTimeout = 10 * time.Second
	// closeWait is how long Subscription.Close waits for the kafka-go Reader to
	// leave the group before letting it finish in the background (a join in
	// progress can hold it for RebalanceTimeout); Receiver.Close waits for it.
	closeWait = 2 * time.Second
)

// GroupID is the Kafka consumer group id a consumer of group on topic joins
// (unless Options.GroupIDVerbatim), for tools that inspect or remove it.
func GroupID(group, topic string) string { return groupID(group, topic, false) }

// groupID is the Kafka consumer group id of group on topic: "<group>/<topic>"
// unless verbatim. Neither a Kafka topic name nor a ConsumerOptions.Group can
// contain '/', so distinct (group, topic) pairs never share an id.
func groupID(group, topic string, verbatim bool) string {
	if verbatim {
		return group
	}
	return group + "/" + topic
}

// receiver is the driver.Receiver: one kafka-go Reader per subscription.
type receiver struct {
	a    *admin
	opts broker.ConsumerOptions

	mu      sync.Mutex
	subs    map[*subscription]struct{}
	leaving sync.WaitGroup // Readers still leaving their group after Close
}

var (
	_ driver.Receiver     = (*receiver)(nil)
	_ driver.StatsReader  = (*receiver)(nil)
	_ driver.Subscription = (*subscription)(nil)
)

func (r *receiver) Features() driver.Features {
	return driver.Features{
		Capabilities: broker.Capabilities{FanOut: true, OrderedByKey: true},
		// A partition is a log: a message cannot be handed back alone. The
		// consumer retries in process, and a message it never finished keeps
		// the commit position below it.
		NackRedelivers: false,
		// The Reader fetches ahead into its queue whatever the consumer does;
		// partitions, not the consumer's window, decide who gets what.
		Buffered: readerQueue,
	}
}

// Subscribe checks that topic exists (creating it and its dead-letter topic
// under Options.CreateTopics), then joins the group in the background.
func (r *receiver) Subscribe(ctx context.Context, topic string, cfg driver.SubscribeConfig) (driver.Subscription, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	co := cfg.Options
	log := co.Logger.With("adapter", "kafka", "topic", topic, "group", co.Group)
	dead := co.DeadLetterTopicFor(topic)
	if err := r.a.ensure(ctx, topic); err != nil {
		if !errors.Is(err, broker.ErrUnavailable) {
			return nil, err
		}
		// The broker is down: the Reader joins once it is back.
		log.Warn("kafka: cannot look up the topic; consuming anyway", "error", err)
	} else if broker.IsDeadLetterTopic(topic) && co.DeadLetterTopic == "" {
		// A dead-letter topic's consumer (dlq.Peek, dlq.Redrive) parks
		// nothing: no "<x>.dlq.dlq" is created for it.
	} else if err := r.a.ensure(ctx, dead); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Not fatal: dead-lettering retries until the topic exists.
		log.Warn("kafka: the dead-letter topic is not available; dead-lettering will fail until it is",
			"dead_letter_topic", dead, "error", err)
	}
	o := r.a.opts
	gid := groupID(co.Group, topic, o.GroupIDVerbatim)
	rc := kafka.ReaderConfig{
		Brokers:                r.a.brokers,
		GroupID:                gid,
		Topic:                  topic,
		Dialer:                 o.dialer(),
		QueueCapacity:          readerQueue,
		MinBytes:               1,
		MaxBytes:               max(fetchMaxBytes, 2*o.MaxMessageSize),
		MaxWait:                o.MaxWait,
		ReadBatchTimeout:       10 * time.Second,
		ReadLagInterval:        -1,
		GroupBalancers:         []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}},
		HeartbeatInterval:      o.HeartbeatInterval,
		CommitInterval:         0, // synchronous: the subscription batches commits itself
		PartitionWatchInterval: 5 * time.Second,
		WatchPartitionChanges:  true,
		SessionTimeout:         o.SessionTimeout,
		RebalanceTimeout:       o.RebalanceTimeout,
		JoinGroupBackoff:       joinGroupBackoff,
		StartOffset:            o.InitialOffset.kafka(),
		ReadBackoffMin:         100 * time.Millisecond,
		ReadBackoffMax:         time.Second,
		ErrorLogger:            debugLogger(log),
		IsolationLevel:         kafka.ReadCommitted,
		MaxAttempts:            3,
	}
	s := &subscription{
		r:        r,
		topic:    topic,
		group:    co.Group,
		reader:   kafka.NewReader(rc),
		interval: o.CommitInterval,
		log:      log,
		offsets:  newOffsets(),
		done:     make(chan struct{}),
		probe:    probe{Context: context.Background()},
	}
	s.loopCtx, s.stopLoop = context.WithCancel(context.Background())
	r.mu.Lock()
	r.subs[s] = struct{}{}
	r.mu.Unlock()
	go s.commitLoop()
	return s, nil
}

// Close waits for the Readers of closed subscriptions to leave their groups.
func (r *receiver) Close() error {
	r.leaving.Wait()
	r.a.release()
	return nil
}

// Stats implements driver.StatsReader. InFlight counts this consumer's
// unsettled deliveries of topic and group, or is -1 when it is not consuming
// them: other members' are not visible.
func (r *receiver) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	if group == "" {
		group = r.opts.Group
	}
	inFlight, consuming := int64(0), false
	r.mu.Lock()
	for s := range r.subs {
		if s.topic == topic && s.group == group {
			inFlight += s.inFlight.Load()
			consuming = true
		}
	}
	r.mu.Unlock()
	if !consuming {
		inFlight = -1
	}
	return r.a.stats(ctx, topic, groupID(group, topic, r.a.opts.GroupIDVerbatim), r.opts.DeadLetterTopicFor(topic), inFlight)
}

// subscription is one topic for one group: a kafka-go Reader, which fetches
// ahead into its queue, and a goroutine that commits on an interval.
type subscription struct {
	r        *receiver
	topic    string
	group    string
	reader   *kafka.Reader
	interval time.Duration
	log      *slog.Logger

	loopCtx  context.Context // ends when Close starts, cutting a commit in progress short
	stopLoop context.CancelFunc
	done     chan struct{} // closed when the commit loop ended

	stash error              // an error fetched behind messages, returned by the next Receive
	probe probe              // the context of fetchBuffered's calls
	batch []*driver.Delivery // what Receive returned last, reused by the next call

	mu       sync.Mutex // guards offsets
	offsets  *offsets
	inFlight atomic.Int64
	failing  bool // the last commit failed; logged once per streak
	closed   bool
}

// Receive fetches at least one message, and then as many more, up to max, as
// the Reader holds already. The slice it returns is valid until the next call.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	if err := s.stash; err != nil {
		s.stash = nil
		return nil, s.receiveError(err)
	}
	for {
		first, err := s.reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, s.receiveError(err)
		}
		// One allocation for the batch's messages, which are converted into it
		// as they are fetched (a slab stays in memory until the last of its
		// messages is no longer referenced), and one for their offset entries.
		n := 1 + min(int(s.reader.Stats().QueueLength), max-1)
		slab, entries := make([]received, n), make([]entry, n)
		slab[0].fill(&first, &entries[0])
		n, s.stash = s.fetchBuffered(slab[1:], entries[1:])
		if ds := s.deliveries(slab[:1+n]); len(ds) > 0 {
			return ds, nil
		}
		if err := s.stash; err != nil {
			s.stash = nil
			return nil, s.receiveError(err)
		}
		// all of them were handled before a rebalance: wait for more
	}
}

// fetchBuffered fetches messages the Reader holds already into rs, with es
// as their offset entries, without waiting for more. It returns how many it
// fetched, and the error of a failed fetch (not a message) for Receive to
// report once the fetched ones are handled.
//
// kafka-go has no non-blocking fetch. The Reader's statistics tell how many
// messages its queue holds, rs is no longer than that, and only this
// subscription takes from the queue, so each FetchMessage call finds a
// message waiting. They run with a probe context, which never makes the
// select in FetchMessage wait: an ended context would take the place of a
// waiting message half of the time, as a select picks at random among the
// cases that are ready.
func (s *subscription) fetchBuffered(rs []received, es []entry) (int, error) {
	for i := range rs {
		s.probe.selects = 0
		km, err := s.reader.FetchMessage(&s.probe)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return i, nil // the queue held only records of an earlier generation
			}
			return i, err
		}
		rs[i].fill(&km, &es[i])
	}
	return len(rs), nil
}

// probe is the context of a FetchMessage call made when the Reader's queue is
// known to hold a message. The first select in FetchMessage sees no Done
// channel, so it takes the waiting message (or a pending Reader error); should
// FetchMessage select again, after skipping a record of a generation the
// group has left, Done is closed, so the call cannot block.
type probe struct {
	context.Context // Background: no deadline, no values
	selects         int
}

// Done is nil for the first select of a call, closed from the second on.
func (p *probe) Done() <-chan struct{} {
	p.selects++
	if p.selects == 1 {
		return nil
	}
	return closed
}

// Err is Canceled once Done was closed.
func (p *probe) Err() error {
	if p.selects > 1 {
		return context.Canceled
	}
	return nil
}

// closed is a channel that is closed.
var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// deliveries records the fetched messages of slab in the offsets and returns
// the deliveries of those not already handled or being handled, in a slice
// the next call reuses.
//
// The offset entries are allocated apart from the messages, in a slab of
// their own: the offsets keep an entry until every earlier offset of its
// partition is finished (so, behind a slow message, as long as that message
// runs), and also entries of records not delivered, while a message and the
// body it points to are garbage as soon as the handler is done with them.
// Kept in one allocation, an entry would keep its whole batch, bodies and
// all, in memory behind the slow message.
func (s *subscription) deliveries(slab []received) []*driver.Delivery {
	ds := s.batch[:0]
	s.mu.Lock()
	for i := range slab {
		if e := slab[i].entry(); s.offsets.track(e, int(e.partition), e.offset) {
			ds = append(ds, &slab[i].delivery)
		}
	}
	s.mu.Unlock()
	clear(ds[len(ds):cap(ds)]) // let earlier batches' slabs go
	s.batch = ds
	s.inFlight.Add(int64(len(ds)))
	return ds
}

// received is one fetched message, allocated with the others of its batch:
// its delivery, its portable message, and what else of the record As needs to
// rebuild it (its entry has the partition and the offset). Keeping the
// kafka.Message itself instead would cost 150 bytes more per message, for a
// value few handlers ask for.
type received struct {
	delivery      driver.Delivery // Handle is the *entry
	msg           broker.Message
	highWaterMark int64
	headers       []kafka.Header // the record's headers, the ID among them, in their order
}

// fill converts a fetched record into r, a zero received, with e as its
// offset entry, and makes r the message's Native value.
func (r *received) fill(km *kafka.Message, e *entry) {
	fromKafka(&r.msg, km)
	r.msg.Native = r
	r.delivery.Message = &r.msg
	r.delivery.Handle = e
	e.partition, e.offset = int32(km.Partition), km.Offset
	r.highWaterMark, r.headers = km.HighWaterMark, km.Headers
}

func (r *received) entry() *entry { return r.delivery.Handle.(*entry) }

// As sets a *kafka.Message or **kafka.Message target to the record the
// message was received as: a new kafka.Message each call, with its own copies
// of the key and the headers. Its Value is the message's Body.
func (r *received) As(target any) bool {
	switch t := target.(type) {
	case *kafka.Message:
		*t = r.record()
	case **kafka.Message:
		km := r.record()
		*t = &km
	default:
		return false
	}
	return true
}

func (r *received) record() kafka.Message {
	e := r.entry()
	km := kafka.Message{
		Topic:         r.msg.Topic,
		Partition:     int(e.partition),
		Offset:        e.offset,
		HighWaterMark: r.highWaterMark,
		Value:         r.msg.Body,
		Time:          r.msg.PublishedAt,
	}
	if r.msg.Key != "" {
		km.Key = []byte(r.msg.Key)
	}
	if len(r.headers) > 0 {
		km.Headers = make([]kafka.Header, len(r.headers))
		for i, h := range r.headers {
			km.Headers[i] = kafka.Header{Key: h.Key, Value: bytes.Clone(h.Value)}
		}
	}
	return km
}

// fromKafka fills m, a zero message, from a fetched record; see records.fill.
//
// m's ID, Key and header values share their bytes with the record's key and
// header values instead of copying them. kafka-go allocates those for each
// record it reads and keeps no reference; the caller must not let anything
// else write to them (As hands out copies).
func fromKafka(m *broker.Message, km *kafka.Message) {
	m.Key = bytesString(km.Key)
	m.Body = km.Value
	m.Topic = km.Topic
	m.Attempt = 1
	m.PublishedAt = km.Time
	for _, h := range km.Headers {
		if h.Key == HeaderID {
			m.ID = bytesString(h.Value)
			continue
		}
		if m.Headers == nil {
			m.Headers = make(map[string]string, len(km.Headers))
		}
		m.Headers[h.Key] = bytesString(h.Value)
	}
	if m.ID == "" {
		m.ID = km.Topic + "/" + strconv.Itoa(km.Partition) + "/" + strconv.FormatInt(km.Offset, 10)
	}
}

// bytesString is b as a string without a copy; b must never change after.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// receiveError classifies an error the Reader reported. The Reader keeps
// reconnecting by itself, so anything not known to be permanent (denied
// access, a deleted topic) is broker.ErrUnavailable: the consumer pauses and
// receives again.
func (s *subscription) receiveError(err error) error {
	op := fmt.Sprintf("receive %q", s.topic)
	switch sentinel(err) {
	case broker.ErrPermissionDenied, broker.ErrNotFound, broker.ErrInvalidArgument, broker.ErrUnsupported:
		return wrap(context.Background(), op, err)
	}
	return unavailable(op, err)
}

// Ack marks the delivery finished; the commit loop commits it with its
// partition's finished prefix.
func (s *subscription) Ack(ctx context.Context, d *driver.Delivery) error {
	return s.settle(d, true)
}

// Nack marks the delivery as not finished: the commit position of its
// partition stays below it, so the group receives it again after this member
// stops or loses the partition. The consumer calls it only when it shuts down
// (Features.NackRedelivers is false), so delay does not apply.
func (s *subscription) Nack(ctx context.Context, d *driver.Delivery, delay time.Duration) error {
	return s.settle(d, false)
}

func (s *subscription) settle(d *driver.Delivery, ok bool) error {
	e, _ := d.Handle.(*entry)
	if e == nil {
		return fmt.Errorf("kafka: settle: delivery not from this adapter: %w", broker.ErrInvalidArgument)
	}
	s.mu.Lock()
	if e.state == running {
		s.inFlight.Add(-1)
	}
	e.finish(ok)
	s.mu.Unlock()
	return nil
}

func (s *subscription) commitLoop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = s.commit(s.loopCtx)
		case <-s.loopCtx.Done():
			return
		}
	}
}

// commit commits every partition whose finished prefix grew, in one request,
// waiting at most commitTimeout. Between two generations of the group (a
// rebalance, the broker restarting) it waits for the next one.
func (s *subscription) commit(ctx context.Context) error {
	s.mu.Lock()
	msgs := s.offsets.commits(s.topic)
	s.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	err := s.reader.CommitMessages(ctx, msgs...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.loopCtx.Err() != nil {
			return err // closing: Close commits again and returns its error
		}
		if !s.failing {
			s.log.Warn("kafka: commit failed; retrying, messages may be redelivered if this member stops first", "error", err)
		}
		s.failing = true
		return err
	}
	if s.failing {
		s.log.Info("kafka: commits succeed again")
	}
	s.failing = false
	s.offsets.committed(msgs)
	return nil
}

// Close commits what was finished and leaves the group. Messages the Reader
// fetched ahead, and deliveries not finished, come back to the group.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stopLoop()
	<-s.done
	err := s.commit(context.Background())
	if err != nil {
		err = unavailable(fmt.Sprintf("final commit of %q", s.topic), err)
	}
	r := s.r
	r.mu.Lock()
	delete(r.subs, s)
	r.mu.Unlock()
	r.leaving.Add(1)
	left := make(chan struct{})
	go func() {
		defer r.leaving.Done()
		_ = s.reader.Close()
		close(left)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-left:
	case <-t.C:
		s.log.Debug("kafka: still leaving the group; finishing in the background")
	}
	return err
}

// debugLogger sends kafka-go's error log lines, mostly reconnect chatter, to
// log at debug level.
func debugLogger(log *slog.Logger) kafka.Logger {
	return kafka.LoggerFunc(func(format string, args ...any) {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug("kafka-go: " + fmt.Sprintf(format, args...))
		}
	})
}
