package kafkabroker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

const (
	// fetchMaxBytes bounds one Fetch response. The broker still returns a
	// first record batch larger than that whole, so a big message never
	// blocks its partition.
	fetchMaxBytes = 1 << 20
	// fetchTimeout is how long a Fetch may take beyond its MaxWait before
	// the connection is given up as dead.
	fetchTimeout = 10 * time.Second
	// maxRun is the most records one run holds: a run is what Receive takes
	// from a partition at a time, and one allocation.
	maxRun = 256
	// runsAhead is how many runs the partitions of a subscription may have
	// fetched and decoded ahead of Receive; each partition's fetcher also
	// holds the response it decodes, at most fetchMaxBytes.
	runsAhead = 4
	// fetchBackoffMin and fetchBackoffMax bound the pause before a
	// partition fetches again after a failed fetch.
	fetchBackoffMin = 100 * time.Millisecond
	fetchBackoffMax = time.Second
)

// run is a run of consecutive records of one partition, fetched in a
// generation of the group. next is the fetch position after it: past its
// last record and past any records skipped after it (transaction markers,
// aborted transactions), so that the group's commits move past those too. A
// run of skipped records alone has no recs.
type run struct {
	gen       *kafka.Generation
	recs      []received
	partition int
	next      int64
}

// fetcher reads one partition for one generation of the group: Fetch
// requests to the partition's leader on the shared transport, one at a time,
// each from the offset after the last record it returned. It decodes the
// records into runs for Receive, copying keys and values out of kafka-go's
// pooled buffers.
//
// kafka-go's Reader does the same over a connection of its own per
// partition and hands Receive one message at a time through a channel;
// handing over runs and sharing allocations within them is what lets the
// consumer outpace it (bench/kafkabench).
type fetcher struct {
	s         *subscription
	gen       *kafka.Generation
	partition int
	offset    int64 // the next offset to fetch
	handed    int64 // the next of the last run handed over; -1 before any
	hint      int   // records in the last response, to size the next run
	req       fetchapi.Request
}

// fetch runs a fetcher until the generation ends. It never returns early:
// a function started on a generation that returns ends the generation.
func (s *subscription) fetch(ctx context.Context, gen *kafka.Generation, pa kafka.PartitionAssignment) {
	// A cancellable context of the standard kind, so that the per-request
	// timeouts derived from it do not each start a goroutine to watch the
	// generation's.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &fetcher{s: s, gen: gen, partition: pa.ID, offset: pa.Offset, handed: max(pa.Offset, -1), hint: 1}
	o := s.r.a.opts
	f.req = fetchapi.Request{
		ReplicaID:      -1,
		MaxWaitTime:    int32(o.MaxWait / time.Millisecond),
		MinBytes:       1,
		MaxBytes:       fetchMaxBytes,
		IsolationLevel: int8(kafka.ReadCommitted),
		SessionID:      -1,
		SessionEpoch:   -1,
		Topics: []fetchapi.RequestTopic{{
			Topic: s.topic,
			Partitions: []fetchapi.RequestPartition{{
				Partition:          int32(pa.ID),
				CurrentLeaderEpoch: -1,
				LogStartOffset:     -1,
				PartitionMaxBytes:  fetchMaxBytes,
			}},
		}},
	}
	backoff, failures := time.Duration(0), 0
	for ctx.Err() == nil {
		err := f.step(ctx)
		if err == nil {
			if failures > 0 {
				s.clearReport()
			}
			backoff, failures = 0, 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if misrouted(err) { // a leader moved, or partitions were added
			s.r.a.relearn()
		}
		// A single failure is retried quietly: after a broker restart the
		// first request on each pooled connection fails, and the consumer
		// would pause for it. A second one in a row is an outage to report.
		if failures++; failures > 1 {
			s.report(fetchError(s.topic, pa.ID, err))
		}
		backoff = min(max(2*backoff, fetchBackoffMin), fetchBackoffMax)
		if !driver.Sleep(ctx, backoff) {
			return
		}
	}
}

// step fetches once and hands over what came back.
func (f *fetcher) step(ctx context.Context) error {
	if f.offset < 0 { // the group never committed: where InitialOffset says
		spans, err := f.s.r.a.spans(ctx, f.s.topic)
		if err != nil {
			return err
		}
		sp, ok := spans[f.partition]
		if !ok { // added since the metadata was cached
			return fmt.Errorf("list offsets of partition %d: %w", f.partition, kafka.UnknownTopicOrPartition)
		}
		off := sp.first
		if f.offset == kafka.LastOffset {
			off = sp.end
		}
		f.offset, f.handed = off, off
	}
	o := f.s.r.a.opts
	f.req.Topics[0].Partitions[0].FetchOffset = f.offset
	rctx, cancel := context.WithTimeout(ctx, o.MaxWait+fetchTimeout)
	m, err := f.s.r.a.transport.RoundTrip(rctx, f.s.r.a.addr, &f.req)
	cancel()
	if err != nil {
		return err
	}
	res, ok := m.(*fetchapi.Response)
	if !ok {
		return fmt.Errorf("fetch: a response of type %T", m)
	}
	if res.ErrorCode != 0 {
		return kafka.Error(res.ErrorCode)
	}
	if len(res.Topics) != 1 || len(res.Topics[0].Partitions) != 1 {
		return fmt.Errorf("fetch: a response for %d topics: %w", len(res.Topics), protocol.ErrNoPartition)
	}
	p := &res.Topics[0].Partitions[0]
	switch code := kafka.Error(p.ErrorCode); code {
	case 0:
	case kafka.OffsetOutOfRange:
		// Retention removed what the group committed, or the topic was
		// recreated: start over where a new group would.
		from := f.offset
		f.offset, f.handed = f.s.r.a.opts.InitialOffset.kafka(), -1
		f.s.log.Warn("kafka: committed offset out of range; starting over at the initial offset",
			"partition", f.partition, "offset", from, "initial_offset", f.s.r.a.opts.InitialOffset.String())
		return nil
	default:
		return code
	}
	if p.RecordSet.Records == nil {
		return nil // nothing new within MaxWait
	}
	return f.hand(ctx, p.RecordSet.Records, p.HighWatermark, newAborts(p.AbortedTransactions))
}

// hand decodes the records of a response into runs and queues them for
// Receive, skipping those before the requested offset (a response starts at
// the start of a record batch), control records (transaction markers), and
// the batches of aborted transactions that aborts lists.
func (f *fetcher) hand(ctx context.Context, rr protocol.RecordReader, highWaterMark int64, aborts *aborts) error {
	var (
		recs    []received
		entries []entry
		n, seen int
	)
	flush := func() bool {
		if n == 0 && f.offset == f.handed {
			return true
		}
		select {
		case f.s.runs <- run{gen: f.gen, recs: recs[:n], partition: f.partition, next: f.offset}:
		case <-ctx.Done():
			return false
		}
		recs, entries, n = nil, nil, 0
		f.handed = f.offset
		return true
	}
	var err error
	for _, b := range recordBatches(rr) {
		control, skip := aborts.skip(b)
		for {
			var rec *protocol.Record
			rec, err = b.ReadRecord()
			if err != nil {
				break
			}
			if control != nil {
				// ReadControlRecord releases the record's key and value.
				if cr, cerr := protocol.ReadControlRecord(rec); cerr == nil && cr.Type == controlAbort {
					aborts.ended(control.ProducerID)
				}
			} else if skip || rec.Offset < f.offset {
				closeBytes(rec.Key)
				closeBytes(rec.Value)
			}
			if skip || rec.Offset < f.offset {
				if rec.Offset >= f.offset {
					f.offset = rec.Offset + 1
				}
				continue
			}
			if n == len(recs) {
				if !flush() {
					return ctx.Err()
				}
				size := f.hint - seen // what is left if this response is like the last
				if size <= 0 {
					size = max(seen, 16) // it is larger: double what it held
				}
				size = min(size, maxRun)
				recs, entries = make([]received, size), make([]entry, size)
			}
			km := kafka.Message{
				Topic:         f.s.topic,
				Partition:     f.partition,
				Offset:        rec.Offset,
				HighWaterMark: highWaterMark,
				Key:           copyBytes(rec.Key),
				Value:         copyBytes(rec.Value),
				Headers:       rec.Headers,
				Time:          rec.Time,
			}
			recs[n].fill(&km, &entries[n])
			n++
			seen++
			f.offset = rec.Offset + 1
		}
		if !errors.Is(err, io.EOF) {
			break
		}
		err = nil
	}
	if seen > 0 {
		f.hint = seen
	}
	if !flush() {
		return ctx.Err()
	}
	return err
}

// controlAbort is the type of the control record that ends an aborted
// transaction (1 ends a committed one).
const controlAbort = 0

// aborts follows, through one Fetch response, the transactions the broker
// lists as aborted in it, so that their records are skipped, as the Java
// consumer skips them under read_committed: a transactional batch of a
// producer is skipped from the first offset of its aborted transaction up to
// the producer's abort marker. A nil *aborts (no aborted transaction in the
// response, the common case) skips control batches only.
type aborts struct {
	pending []fetchapi.ResponseTransaction // by first offset, not reached yet
	active  map[int64]bool                 // producers inside an aborted transaction
}

func newAborts(list []fetchapi.ResponseTransaction) *aborts {
	if len(list) == 0 {
		return nil
	}
	a := &aborts{pending: slices.Clone(list), active: map[int64]bool{}}
	slices.SortFunc(a.pending, func(x, y fetchapi.ResponseTransaction) int { return cmp.Compare(x.FirstOffset, y.FirstOffset) })
	return a
}

// skip reports whether the records of b are to be skipped, and b itself when
// it is a control batch (whose markers the caller passes to ended).
func (a *aborts) skip(b protocol.RecordReader) (control *protocol.ControlBatch, skip bool) {
	var producer, base int64 = -1, 0
	transactional := false
	switch x := b.(type) {
	case *protocol.ControlBatch:
		control, producer, base, skip = x, x.ProducerID, x.BaseOffset, true
	case *protocol.RecordBatch:
		producer, base, transactional = x.ProducerID, x.BaseOffset, x.Attributes.Transactional()
	}
	if a == nil || producer < 0 {
		return control, skip
	}
	for len(a.pending) > 0 && a.pending[0].FirstOffset <= base {
		a.active[a.pending[0].ProducerID] = true
		a.pending = a.pending[1:]
	}
	return control, skip || transactional && a.active[producer]
}

// ended records that producer's aborted transaction ended (its abort marker).
func (a *aborts) ended(producer int64) {
	if a != nil {
		delete(a.active, producer)
	}
}

// recordBatches returns the record batches of a response's record set in
// order, control batches included, which kafka-go's RecordStream would skip
// without telling their offsets.
func recordBatches(rr protocol.RecordReader) []protocol.RecordReader {
	if s, ok := rr.(*protocol.RecordStream); ok {
		return s.Records
	}
	return []protocol.RecordReader{rr}
}

// copyBytes reads b, a key or value in kafka-go's pooled buffers, into a
// slice of its own, and releases it. nil stays nil.
//
// Each gets its own allocation, as kafka-go's Reader gives them: carving
// them out of shared buffers measured within the noise (bench/kafkabench),
// and a handler that keeps one body would keep its neighbours too.
func copyBytes(b protocol.Bytes) []byte {
	if b == nil {
		return nil
	}
	defer b.Close()
	out := make([]byte, b.Len())
	if _, err := io.ReadFull(b, out); err != nil {
		// The bytes are in memory already: a short read is a bug in the
		// decoder, not a network failure.
		panic(fmt.Sprintf("kafkabroker: reading a fetched record: %v", err))
	}
	return out
}

func closeBytes(b protocol.Bytes) {
	if b != nil {
		b.Close()
	}
}

// fetchError describes a failed fetch of a partition for Receive. The
// fetcher retries by itself, so only a refusal (denied access, an
// unsupported feature) is permanent; anything else, a deleted topic
// included, is broker.ErrUnavailable: the consumer logs it and goes on
// receiving from the other partitions.
func fetchError(topic string, partition int, err error) error {
	op := fmt.Sprintf("fetch %q partition %d", topic, partition)
	switch sentinel(err) {
	case broker.ErrPermissionDenied, broker.ErrUnsupported:
		return wrap(context.Background(), op, err)
	}
	return fmt.Errorf("kafka: %s: %w: %w", op, broker.ErrUnavailable, err)
}
