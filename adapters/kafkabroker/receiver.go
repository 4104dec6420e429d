package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
	"github.com/segmentio/kafka-go"
)

const (
	// joinGroupBackoff is the pause before rejoining the group after a failed
	// join, for example while the broker restarts.
	joinGroupBackoff = time.Second
	// commitTimeout bounds one commit request, and the final commit on Close.
	commitTimeout = 10 * time.Second
	// closeWait is how long Subscription.Close waits for the member to leave
	// the group before letting it finish in the background (a join in
	// progress can hold it for RebalanceTimeout); Receiver.Close waits for it.
	closeWait = 2 * time.Second
	// partitionWatchInterval is how often a generation checks the topic's
	// partition count, rebalancing when partitions were added.
	partitionWatchInterval = 5 * time.Second
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

// receiver is the driver.Receiver: a subscription is a member of a kafka-go
// ConsumerGroup, which joins, heartbeats and assigns partitions, and reads
// its partitions itself (see fetcher).
type receiver struct {
	a    *admin
	opts broker.ConsumerOptions

	mu      sync.Mutex
	subs    map[*subscription]struct{}
	leaving sync.WaitGroup // members still leaving their group after Close
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
		// The fetchers read ahead whatever the consumer does; partitions, not
		// the consumer's window, decide who gets what.
		Buffered: maxRun,
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
		// The broker is down: the member joins once it is back.
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
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                     groupID(co.Group, topic, o.GroupIDVerbatim),
		Brokers:                r.a.brokers,
		Dialer:                 o.dialer(),
		Topics:                 []string{topic},
		GroupBalancers:         []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}},
		HeartbeatInterval:      o.HeartbeatInterval,
		PartitionWatchInterval: partitionWatchInterval,
		WatchPartitionChanges:  true,
		SessionTimeout:         o.SessionTimeout,
		RebalanceTimeout:       o.RebalanceTimeout,
		JoinGroupBackoff:       joinGroupBackoff,
		StartOffset:            o.InitialOffset.kafka(),
		ErrorLogger:            debugLogger(log),
		Timeout:                commitTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("kafka: subscribe %q: %w: %w", topic, broker.ErrInvalidArgument, err)
	}
	s := &subscription{
		r:        r,
		topic:    topic,
		group:    co.Group,
		members:  group,
		interval: o.CommitInterval,
		log:      log,
		offsets:  newOffsets(),
		runs:     make(chan run, runsAhead),
		errs:     make(chan error, 1),
		done:     make(chan struct{}),
	}
	s.loopCtx, s.stopLoop = context.WithCancel(context.Background())
	r.mu.Lock()
	r.subs[s] = struct{}{}
	r.mu.Unlock()
	go s.follow()
	return s, nil
}

// Close waits for the members of closed subscriptions to leave their groups.
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

// subscription is one topic for one group: a member of the group, a
// fetcher for each partition the group assigns it (started anew for each
// generation of the group), and a goroutine per generation that commits on an
// interval.
type subscription struct {
	r        *receiver
	topic    string
	group    string
	members  *kafka.ConsumerGroup
	interval time.Duration
	log      *slog.Logger

	loopCtx  context.Context // ends when Close starts
	stopLoop context.CancelFunc
	done     chan struct{} // closed when follow returned

	runs    chan run   // fetched runs of records, in each partition's order
	errs    chan error // the latest failure to join or fetch, for Receive
	rest    []received // what is left of the run Receive took last
	restRun run        // that run, for its generation, partition and next
	batch   []*driver.Delivery

	commitMu sync.Mutex // one commit at a time, so positions only move forward

	mu       sync.Mutex // guards offsets, gen and the fields below
	gen      *kafka.Generation
	offsets  *offsets
	inFlight atomic.Int64
	failing  bool // the last commit failed; logged once per streak
	closed   bool
}

// follow takes each generation of the group as it comes and starts its
// fetchers and its commit loop, until Close.
func (s *subscription) follow() {
	defer close(s.done)
	for {
		gen, err := s.members.Next(s.loopCtx)
		if err != nil {
			if s.loopCtx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			// The group tries again by itself, after joinGroupBackoff.
			s.report(s.joinError(err))
			continue
		}
		s.mu.Lock()
		s.gen = gen
		s.mu.Unlock()
		gen.Start(func(ctx context.Context) { s.commitLoop(ctx, gen) })
		for _, pa := range gen.Assignments[s.topic] {
			gen.Start(func(ctx context.Context) { s.fetch(ctx, gen, pa) })
		}
	}
}

// report hands err to the next Receive, replacing one not taken yet.
func (s *subscription) report(err error) {
	for {
		select {
		case s.errs <- err:
			return
		default:
		}
		select {
		case <-s.errs:
		default:
		}
	}
}

// clearReport drops a reported error not taken yet: a fetch succeeded since,
// and the consumer would pause for an outage that is over. A failure that
// goes on is reported again by its next attempt.
func (s *subscription) clearReport() {
	select {
	case <-s.errs:
	default:
	}
}

// Receive returns the fetched records waiting, up to max, waiting for one if
// there is none. The slice it returns is valid until the next call.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	for {
		// Records first: an error reported meanwhile can wait.
		if len(s.rest) == 0 && !s.takeWaiting() {
			select {
			case r := <-s.runs:
				s.take(r)
				continue
			case err := <-s.errs:
				return nil, err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		// Then as many more as are waiting, so that the consumer's handlers
		// get several partitions' messages at once.
		ds := s.batch[:0]
		for len(ds) < max {
			if len(s.rest) == 0 {
				if !s.takeWaiting() {
					break
				}
				continue
			}
			n := min(len(s.rest), max-len(ds))
			next := int64(-1)
			if n == len(s.rest) { // the run's end
				next = s.restRun.next
			}
			var current bool
			if ds, current = s.deliveries(ds, s.rest[:n], s.restRun.gen, s.restRun.partition, next); !current {
				s.rest = nil
				continue
			}
			s.rest = s.rest[n:]
		}
		clear(ds[len(ds):cap(ds)]) // let earlier runs go
		s.batch = ds
		if len(ds) > 0 {
			s.inFlight.Add(int64(len(ds)))
			return ds, nil
		}
		// all of them were handled before a rebalance: wait for more
	}
}

// takeWaiting takes a run fetched already, if there is one, without
// waiting.
func (s *subscription) takeWaiting() bool {
	select {
	case r := <-s.runs:
		s.take(r)
		return true
	default:
		return false
	}
}

// take makes r the run Receive hands out next; a run of skipped records
// alone only moves the partition's commit position.
func (s *subscription) take(r run) {
	if len(r.recs) == 0 {
		s.deliveries(nil, nil, r.gen, r.partition, r.next)
		return
	}
	s.rest, s.restRun = r.recs, r
}

// deliveries records the fetched records rs in the offsets and appends to
// ds the deliveries of those not already handled or being handled. When rs
// ends a run, next is the run's next, the fetch position after it, which
// also covers records skipped after rs, else -1. When gen, the generation
// rs was fetched in, has ended, it records and appends nothing and reports
// false: the group restarts every partition at its committed offset in the
// next generation, so those records come again, from whichever member the
// partition goes to.
//
// The offset entries are allocated apart from the records, in a slab of
// their own: the offsets keep an entry until every earlier offset of its
// partition is finished (so, behind a slow message, as long as that message
// runs), and also entries of records not delivered, while a message and the
// body it points to are garbage as soon as the handler is done with them.
// Kept in one allocation, an entry would keep its whole run, bodies and
// all, in memory behind the slow message.
func (s *subscription) deliveries(ds []*driver.Delivery, rs []received, gen *kafka.Generation, partition int, next int64) ([]*driver.Delivery, bool) {
	s.mu.Lock()
	if gen != s.gen {
		s.mu.Unlock()
		return ds, false
	}
	for i := range rs {
		if e := rs[i].entry(); s.offsets.track(e, int(e.partition), e.offset) {
			ds = append(ds, &rs[i].delivery)
		}
	}
	if next >= 0 {
		s.offsets.skip(partition, next)
	}
	s.mu.Unlock()
	return ds, true
}

// joinError classifies a failure to join the group. The group keeps trying by
// itself, so only a refusal (denied access, settings the broker rejects, a
// feature it lacks) is permanent and ends Consume; anything else is
// broker.ErrUnavailable, which the consumer logs before receiving again. A
// topic the coordinator does not know yet is among those: metadata reaches
// the brokers of a cluster one after the other, and a topic created a moment
// ago may be missing from one of them.
func (s *subscription) joinError(err error) error {
	op := fmt.Sprintf("join the group of %q", s.topic)
	switch sentinel(err) {
	case broker.ErrPermissionDenied, broker.ErrInvalidArgument, broker.ErrUnsupported:
		return wrap(context.Background(), op, err)
	}
	return fmt.Errorf("kafka: %s: %w: %w", op, broker.ErrUnavailable, err)
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

// commitLoop commits every interval during gen, and once more when gen
// ends, before the group moves on: while a rebalance is being prepared the
// coordinator still takes the ending generation's commits, so the next owner
// of a partition starts after what this member finished.
func (s *subscription) commitLoop(ctx context.Context, gen *kafka.Generation) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = s.commit(gen)
		case <-ctx.Done():
			_ = s.commit(gen)
			s.mu.Lock()
			if s.gen == gen {
				s.gen = nil
			}
			s.mu.Unlock()
			return
		}
	}
}

// commit commits, in gen, every partition whose finished prefix grew, in one
// request that waits at most commitTimeout.
func (s *subscription) commit(gen *kafka.Generation) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	positions := s.offsets.commits()
	s.mu.Unlock()
	if len(positions) == 0 {
		return nil
	}
	err := gen.CommitOffsets(map[string]map[int]int64{s.topic: positions})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if !s.failing && !s.closed {
			s.log.Warn("kafka: commit failed; retrying, messages may be redelivered if this member stops first", "error", err)
		}
		s.failing = true
		return err
	}
	if s.failing {
		s.log.Info("kafka: commits succeed again")
	}
	s.failing = false
	s.offsets.committed(positions)
	return nil
}

// Close commits what was finished and leaves the group. Records fetched
// ahead, and deliveries not finished, come back to the group.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	gen := s.gen
	s.mu.Unlock()
	s.stopLoop()
	<-s.done
	var err error
	if gen != nil {
		err = s.commit(gen)
	} else {
		s.mu.Lock()
		if pending := s.offsets.commits(); len(pending) > 0 {
			err = fmt.Errorf("%d partitions have finished messages to commit and the member is in no generation of the group", len(pending))
		}
		s.mu.Unlock()
	}
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
		_ = s.members.Close() // ends the generation, which commits once more, then leaves
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
