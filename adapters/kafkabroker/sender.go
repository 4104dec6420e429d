package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
	"github.com/segmentio/kafka-go"
)

// HeaderID is the record header that carries broker.Message.ID, since a Kafka
// record has no id field of its own. Publishers set it (a Headers entry of the
// same name is dropped: the ID wins) and consumers strip it from Headers. A
// record without it, published by another client, gets the ID
// "<topic>/<partition>/<offset>", which is just as stable across redeliveries.
const HeaderID = "x-message-id"

// The record-batch framing around a message, used to refuse an oversized
// message before anything is sent: the v2 batch header, and the upper bounds
// of a record's fixed varint fields (length, attributes, timestamp and offset
// deltas).
const (
	batchOverhead  = 61
	recordOverhead = 5 + 1 + 10 + 5
	// limitHeaders is how many short headers (names and values under 64
	// bytes) MaxMessageSize leaves room for, beyond HeaderID.
	limitHeaders = 32
)

// framingReserve is what MaxMessageSize keeps free of broker.Message.Size:
// the batch and record framing, the key, value and header-count lengths at
// their largest under a few MiB, HeaderID and its value's length, and two
// length bytes for each of limitHeaders headers.
const framingReserve = batchOverhead + recordOverhead + 4 + 4 + 2 + 1 + len(HeaderID) + 2 + 2*limitHeaders

// varintLen is the size of n as a zig-zag varint, as record fields are encoded.
func varintLen(n int) int {
	u := uint64(n) << 1
	if n < 0 {
		u = ^u
	}
	size := 1
	for u >= 0x80 {
		u >>= 7
		size++
	}
	return size
}

// recordSize is an upper bound of m's encoded size as a record, HeaderID
// included; only the timestamp and offset deltas are not known exactly.
func recordSize(m *broker.Message) int {
	n := recordOverhead + varintLen(len(m.Body)) + len(m.Body) + varintLen(len(m.Headers)+1)
	if m.Key == "" {
		n += varintLen(-1) // a null key
	} else {
		n += varintLen(len(m.Key)) + len(m.Key)
	}
	n += varintLen(len(HeaderID)) + len(HeaderID) + varintLen(len(m.ID)) + len(m.ID)
	for k, v := range m.Headers {
		n += varintLen(len(k)) + len(k) + varintLen(len(v)) + len(v)
	}
	return n
}

// sender is the driver.Sender. A Send is produced directly (see produce):
// one Produce request per partition it touches, on the transport the Writers
// share, unless many Sends of few messages are in flight at once (see
// directInFlight), which go through batching, a kafka-go Writer that waits
// up to Options.BatchTimeout for other Sends to share a partition's batch.
// What a direct Produce could not write goes on through unbatched, a Writer
// with the same settings and no batch wait, so that retries, metadata
// refreshes and error reporting are the Writer's.
//
// (A Writer waits out its batch timer even for a lone message, and a Go
// timer under a millisecond takes about a millisecond in an idle process: a
// lone publish took 1.3 ms through batching, 0.15 ms through unbatched,
// 0.12 ms produced directly. A Writer also copies every message into a batch
// preallocated for BatchSize messages, spreads unkeyed messages one by one
// over the partitions and sends each partition's batch on its own
// goroutine; a Send of 100 unkeyed messages produced directly is one request
// to one partition.)
type sender struct {
	a         *admin
	batching  *kafka.Writer
	unbatched *kafka.Writer
	balancer  kafka.Murmur2Balancer
	active    atomic.Int64 // Sends in flight
	produced  atomic.Int64 // messages produce wrote (for tests)
	requests  atomic.Int64 // Produce requests produce made (for tests)
	limit     int          // Options.MaxMessageSize
	perBatch  int          // Options.BatchSize: the most records of one direct Produce
	records   sync.Pool    // of *records, reused by Sends
}

// unbatchedTimeout is the batch timeout of sender.unbatched: as short as
// kafka-go takes (zero would mean its default of 1 s).
const unbatchedTimeout = time.Nanosecond

var (
	_ driver.Sender      = (*sender)(nil)
	_ driver.StatsReader = (*sender)(nil)
)

// newSender returns a sender that holds a reference to a.
func newSender(a *admin) *sender {
	o := a.opts
	return &sender{
		a:         a.retain(),
		batching:  newWriter(a, o.BatchTimeout),
		unbatched: newWriter(a, unbatchedTimeout),
		limit:     o.MaxMessageSize,
		perBatch:  o.BatchSize,
	}
}

// newWriter returns the Writer of the adapter's options, with batchTimeout.
func newWriter(a *admin, batchTimeout time.Duration) *kafka.Writer {
	o := a.opts
	return &kafka.Writer{
		Addr:                   a.addr,
		Balancer:               &kafka.Murmur2Balancer{},
		MaxAttempts:            o.PublishAttempts,
		WriteBackoffMin:        100 * time.Millisecond,
		WriteBackoffMax:        time.Second,
		BatchSize:              o.BatchSize,
		BatchBytes:             int64(o.MaxMessageSize - batchOverhead),
		BatchTimeout:           batchTimeout,
		ReadTimeout:            o.WriteTimeout,
		WriteTimeout:           o.WriteTimeout,
		RequiredAcks:           o.Acks.required(),
		Compression:            o.Compression,
		Transport:              a.transport,
		AllowAutoTopicCreation: false,
	}
}

// MaxMessageSize is the largest broker.Message.Size that fits in a record
// batch of Options.MaxMessageSize bytes with up to limitHeaders short headers.
// Send checks the exact size of every message, so a message with more or
// longer headers may be refused below it, also before anything is sent.
func (s *sender) MaxMessageSize() int {
	return s.limit - framingReserve
}

// Send writes msgs with one WriteMessages call and returns after the acks.
func (s *sender) Send(ctx context.Context, topic string, msgs []*broker.Message) error {
	if err := validateTopic(topic); err != nil {
		return err
	}
	for i, m := range msgs {
		if n := batchOverhead + recordSize(m); n > s.limit {
			return fmt.Errorf("kafka: publish %q: message #%d (id %q) encodes to %d bytes with its %d headers, over the limit of %d: %w",
				topic, i, m.ID, n, len(m.Headers), s.limit, broker.ErrMessageTooLarge)
		}
	}
	if s.a.opts.CreateTopics {
		if err := s.a.ensure(ctx, topic); err != nil {
			return err
		}
	}
	rs, _ := s.records.Get().(*records)
	if rs == nil {
		rs = new(records)
	}
	km := rs.fill(topic, msgs, time.Now())
	inFlight := s.active.Add(1)
	defer s.active.Add(-1)
	var err error
	reuse := true
	if inFlight <= directInFlight || len(km) >= directMin {
		failed, cause := s.produce(ctx, topic, msgs, km)
		if len(failed) > 0 {
			reuse = reusable(cause)
			err = s.fallback(ctx, topic, km, failed, cause)
		}
	} else {
		err = s.write(ctx, s.batching, topic, km)
	}
	if reuse && reusable(err) {
		rs.reset()
		s.records.Put(rs)
	}
	return s.result(ctx, topic, msgs, err)
}

// write writes km with one WriteMessages call of w.
func (s *sender) write(ctx context.Context, w *kafka.Writer, topic string, km []kafka.Message) error {
	err := w.WriteMessages(ctx, km...)
	if err != nil && errors.Is(err, kafka.UnknownTopicOrPartition) && !isWriteErrors(err) {
		// The transport's metadata cache may predate the topic: ask the
		// cluster, and retry once if the topic is there after all.
		if s.retryUnknown(ctx, topic) {
			err = w.WriteMessages(ctx, km...)
		}
	}
	return err
}

// reusable reports whether the records of a WriteMessages call that returned
// err may be reused. WriteMessages copies the records into its batches and is
// done with their bytes when it returns, unless it returned because its
// context ended while batches were still being written: those records are
// left to the garbage collector.
func reusable(err error) bool {
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func isWriteErrors(err error) bool {
	var we kafka.WriteErrors
	return errors.As(err, &we)
}

// retryUnknown reports whether topic exists after WriteMessages said it does
// not, refreshing the transport's cache if so.
func (s *sender) retryUnknown(ctx context.Context, topic string) bool {
	found, err := s.a.freshTopics(ctx, topic)
	if err != nil {
		return false
	}
	if _, ok := found[topic]; !ok {
		s.a.forget(topic)
		return false
	}
	return s.a.refresh(ctx, topic) == nil
}

// result turns WriteMessages' error into the driver contract: nil, a context
// error, one wrapped error when every message failed alike, or a
// *broker.PublishError naming the failed messages.
func (s *sender) result(ctx context.Context, topic string, msgs []*broker.Message, err error) error {
	if err == nil {
		return nil
	}
	op := fmt.Sprintf("publish %q", topic)
	var we kafka.WriteErrors
	if !errors.As(err, &we) || len(we) != len(msgs) {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("kafka: %s: topic does not exist (create it, or set create_topics=true): %w: %w", op, broker.ErrNotFound, err)
		}
		return wrap(ctx, op, err)
	}
	pe := &broker.PublishError{Topic: topic}
	var first error
	same := true
	for i, e := range we {
		if e == nil {
			same = false
			continue
		}
		if first == nil {
			first = e
		} else if e.Error() != first.Error() {
			same = false
		}
		pe.Failed = append(pe.Failed, broker.FailedMessage{Index: i, ID: msgs[i].ID, Err: wrap(ctx, op, e)})
	}
	if same && first != nil {
		return pe.Failed[0].Err
	}
	return pe
}

// records holds the kafka-go form of one Send's messages. A sender reuses
// them from Send to Send: at hundreds of thousands of messages a second, the
// records and their ID bytes were a sixth of what publishing allocated.
type records struct {
	km   []kafka.Message
	ids  []kafka.Header // the ID headers of messages without headers of their own
	text []byte         // the bytes of the IDs and keys
}

// fill converts msgs to records for topic: Key into the record key (nil when
// empty, so that the balancer spreads unkeyed messages), ID into HeaderID,
// Headers into record headers, and now as every record's timestamp. The
// bytes of the IDs and keys share one buffer, as do the headers of messages
// that have none of their own. The records are valid until reset.
func (rs *records) fill(topic string, msgs []*broker.Message, now time.Time) []kafka.Message {
	n := 0
	for _, m := range msgs {
		n += len(m.ID) + len(m.Key)
	}
	km := slices.Grow(rs.km[:0], len(msgs))[:len(msgs)]
	ids := slices.Grow(rs.ids[:0], len(msgs))[:len(msgs)]
	text := slices.Grow(rs.text[:0], n)
	for i, m := range msgs {
		km[i] = kafka.Message{Topic: topic, Value: m.Body, Time: now}
		if m.Key != "" {
			text = append(text, m.Key...)
			km[i].Key = text[len(text)-len(m.Key) : len(text) : len(text)]
		}
		text = append(text, m.ID...)
		id := kafka.Header{Key: HeaderID, Value: text[len(text)-len(m.ID) : len(text) : len(text)]}
		if len(m.Headers) == 0 {
			ids[i] = id
			km[i].Headers = ids[i : i+1 : i+1]
			continue
		}
		h := make([]kafka.Header, 0, len(m.Headers)+1)
		h = append(h, id)
		for k, v := range m.Headers {
			if k != HeaderID {
				h = append(h, kafka.Header{Key: k, Value: []byte(v)})
			}
		}
		km[i].Headers = h
	}
	rs.km, rs.ids, rs.text = km, ids, text
	return km
}

// reset drops the references to the messages' bodies and headers, keeping
// the buffers.
func (rs *records) reset() {
	clear(rs.km)
	clear(rs.ids)
}

// Close flushes pending batches and releases the connections.
func (s *sender) Close() error {
	err := errors.Join(s.batching.Close(), s.unbatched.Close())
	s.a.release()
	return err
}

// Stats implements driver.StatsReader for publishers: the group's lag on
// topic; InFlight is unknown (-1) from a publisher.
func (s *sender) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	if group == "" {
		group = broker.DefaultGroup
	}
	return s.a.stats(ctx, topic, groupID(group, topic, s.a.opts.GroupIDVerbatim), broker.DeadLetterTopic(topic), -1)
}
