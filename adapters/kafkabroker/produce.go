package kafkabroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataapi "github.com/segmentio/kafka-go/protocol/metadata"
	produceapi "github.com/segmentio/kafka-go/protocol/produce"

	"github.com/brokerkit/broker"
)

// A Send is produced directly (one request per partition it touches) when
// at most directInFlight Sends are in flight, itself included, or when it
// brings directMin messages or more; otherwise it goes through the batching
// Writer, to share requests with the others.
//
// Measured with 256-byte messages on the 2-core machine of bench/kafkabench,
// against the batching Writer (whose 200 µs batch timer takes about a
// millisecond): 8 goroutines publishing 1 message at a time, direct 3.9x; 10
// at a time 3.95x; 32 at a time 2.8x; 100 at a time 1.9x. 16 goroutines of 1
// message, 1.9x; 32 goroutines, 1.0x; 64, 0.58x; 256, 0.14x: direct requests
// top out near 35,000 a second, while a Writer's batches grow with the
// number of callers sharing them.
const (
	directInFlight = 16
	directMin      = 32
)

// produce writes the records km (made from msgs) with direct Produce
// requests and returns the indices of those it did not write, in order,
// with the error that stopped them; nothing is retried here.
//
// It sends what a Writer would, with the Writers' acks and compression:
// a keyed record to the partition the murmur2 balancer picks among the
// topic's partitions as the transport's metadata cache lists them, so that a
// key keeps its partition whichever path its messages take. Unkeyed records
// of one Send go to one partition, picked at random for each Send, in runs
// of perBatch, the next run to the next partition (the Java client's sticky
// partitioning: one request for a Send of unkeyed messages, and a large Send
// still spread over the partitions, so over the group's members). The records
// for the partitions one broker leads go in one request to it, the brokers'
// requests at once; a partition's records go in batches of up to perBatch
// records and limit bytes, a batch per request, one request after another,
// so a key's order holds.
func (s *sender) produce(ctx context.Context, topic string, msgs []*broker.Message, km []kafka.Message) (failed []int, err error) {
	if len(km) == 0 {
		return nil, nil
	}
	leaders, err := s.leaders(ctx, topic)
	if err != nil {
		failed = make([]int, len(km))
		for i := range failed {
			failed[i] = i
		}
		return failed, err
	}
	n := len(leaders)
	byPartition := make([][]int, n)
	var ids []int // partition numbers, for the balancer
	unkeyed, inRun := rand.IntN(n), 0
	for i := range km {
		var p int
		if len(km[i].Key) > 0 {
			if ids == nil {
				ids = make([]int, n)
				for j := range ids {
					ids[j] = j
				}
			}
			p = s.balancer.Balance(km[i], ids...)
		} else {
			if inRun == s.perBatch { // a full batch: the next partition takes the next
				unkeyed, inRun = (unkeyed+1)%n, 0
			}
			p = unkeyed
			inRun++
		}
		byPartition[p] = append(byPartition[p], i)
	}
	byLeader := map[int][]int{} // leader -> partitions with records
	for p, idx := range byPartition {
		if len(idx) > 0 {
			byLeader[leaders[p]] = append(byLeader[leaders[p]], p)
		}
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	run := func(parts []int) {
		f, e := s.produceTo(ctx, topic, parts, byPartition, msgs, km)
		if len(f) == 0 {
			return
		}
		mu.Lock()
		failed = append(failed, f...)
		if err == nil {
			err = e
		}
		mu.Unlock()
	}
	var last []int
	for _, parts := range byLeader {
		if last != nil {
			wg.Go(func() { run(parts) })
			continue
		}
		last = parts
	}
	run(last) // one leader's on this goroutine: often the only one
	wg.Wait()
	slices.Sort(failed)
	return failed, err
}

// leaders lists the leader of each of topic's partitions, from the
// transport's metadata cache (no round trip; the protocol response as is,
// not kafka.Client.Metadata's conversion of every broker and replica list):
// kafka.UnknownTopicOrPartition when the cache does not know the topic,
// which the fallback Writer then refreshes.
func (s *sender) leaders(ctx context.Context, topic string) ([]int, error) {
	m, err := s.a.transport.RoundTrip(ctx, s.a.addr, &metadataapi.Request{TopicNames: []string{topic}})
	if err != nil {
		return nil, err
	}
	res, ok := m.(*metadataapi.Response)
	if !ok {
		return nil, fmt.Errorf("metadata: a response of type %T", m)
	}
	for _, t := range res.Topics {
		if t.Name != topic {
			continue
		}
		if t.ErrorCode != 0 {
			return nil, kafka.Error(t.ErrorCode)
		}
		leaders := make([]int, len(t.Partitions))
		for _, p := range t.Partitions {
			if p.PartitionIndex < 0 || int(p.PartitionIndex) >= len(leaders) {
				return nil, fmt.Errorf("partition %d of %d in the metadata: %w", p.PartitionIndex, len(leaders), kafka.UnknownTopicOrPartition)
			}
			leaders[p.PartitionIndex] = int(p.LeaderID)
		}
		if len(leaders) > 0 {
			return leaders, nil
		}
	}
	return nil, kafka.UnknownTopicOrPartition
}

// produceTo writes the records of the partitions parts, which one broker
// leads, in requests to it: each carries the next batch of every partition
// that has records left, of up to perBatch records and limit bytes. A
// partition whose batch failed stops there: produceTo returns the indices
// from that batch on, with the first error.
func (s *sender) produceTo(ctx context.Context, topic string, parts []int, byPartition [][]int, msgs []*broker.Message, km []kafka.Message) (failed []int, err error) {
	next := make([]int, len(parts)) // how many of each partition's records are written
	ends := make([]int, len(parts)) // the end of each partition's batch in the request
	stopped := make([]bool, len(parts))
	readers := make([]recordReader, len(parts))
	attributes := protocol.Attributes(s.a.opts.Compression) & 0x7
	for {
		req := &produceapi.Request{
			Acks:    int16(s.a.opts.Acks.required()),
			Timeout: int32(s.a.opts.WriteTimeout / time.Millisecond),
			Topics:  []produceapi.RequestTopic{{Topic: topic}},
		}
		for j, p := range parts {
			idx := byPartition[p]
			start := next[j]
			if stopped[j] || start >= len(idx) {
				continue
			}
			end, size := start, batchOverhead
			for end < len(idx) && end-start < s.perBatch {
				n := recordSize(msgs[idx[end]])
				if end > start && size+n > s.limit {
					break
				}
				size += n
				end++
			}
			ends[j] = end
			readers[j] = recordReader{km: km, idx: idx[start:end]}
			req.Topics[0].Partitions = append(req.Topics[0].Partitions, produceapi.RequestPartition{
				Partition: int32(p),
				RecordSet: protocol.RecordSet{Attributes: attributes, Records: &readers[j]},
			})
		}
		if len(req.Topics[0].Partitions) == 0 {
			return failed, err
		}
		s.requests.Add(1)
		errs, rerr := s.roundTrip(ctx, req)
		for j, p := range parts {
			if stopped[j] || next[j] >= len(byPartition[p]) {
				continue
			}
			e := rerr
			if e == nil {
				e = errs[p]
			}
			if e != nil {
				stopped[j] = true
				failed = append(failed, byPartition[p][next[j]:]...)
				if err == nil {
					err = e
				}
				continue
			}
			s.produced.Add(int64(ends[j] - next[j]))
			next[j] = ends[j]
		}
	}
}

// roundTrip sends req and returns the error of each partition that reported
// one (a partition missing from the response counts as failed), or the error
// of the whole request.
func (s *sender) roundTrip(ctx context.Context, req *produceapi.Request) (map[int]error, error) {
	ctx, cancel := context.WithTimeout(ctx, s.a.opts.WriteTimeout)
	defer cancel()
	m, err := s.a.transport.RoundTrip(ctx, s.a.addr, req)
	if err != nil {
		return nil, err
	}
	if req.Acks == 0 {
		return nil, nil // acks=none: no response to wait for
	}
	res, ok := m.(*produceapi.Response)
	if !ok {
		return nil, fmt.Errorf("produce: a response of type %T", m)
	}
	errs := map[int]error{}
	for _, p := range req.Topics[0].Partitions {
		errs[int(p.Partition)] = errNoResponse
	}
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			switch {
			case p.ErrorCode != 0:
				errs[int(p.Partition)] = kafka.Error(p.ErrorCode)
			case len(p.RecordErrors) > 0:
				errs[int(p.Partition)] = fmt.Errorf("produce: record %d: %s", p.RecordErrors[0].BatchIndex, p.RecordErrors[0].BatchIndexErrorMessage)
			default:
				delete(errs, int(p.Partition))
			}
		}
	}
	return errs, nil
}

// errNoResponse is the error of a partition that a produce response left out.
var errNoResponse = errors.New("produce: no response for the partition")

// fallback writes the records of km that produce did not write (failed,
// because of cause) through the unbatched Writer, with its retries, and returns
// the Send's error: nil when they all went, else kafka.WriteErrors over all
// of km (nil for those written) or, when none went, one error.
func (s *sender) fallback(ctx context.Context, topic string, km []kafka.Message, failed []int, cause error) error {
	err := cause
	var we kafka.WriteErrors
	if ctx.Err() == nil {
		rest := make([]kafka.Message, len(failed))
		for j, i := range failed {
			rest[j] = km[i]
		}
		if err = s.write(ctx, s.unbatched, topic, rest); err == nil {
			return nil
		}
		if !errors.As(err, &we) || len(we) != len(rest) {
			we = nil
		}
	}
	if we == nil && len(failed) == len(km) {
		return err
	}
	out := make(kafka.WriteErrors, len(km))
	for j, i := range failed {
		if we != nil {
			out[i] = we[j]
		} else {
			out[i] = err
		}
	}
	return out
}

// recordReader reads km[idx] as records for a Produce request, with one
// Record and two byte readers used for every record in turn, as kafka-go's
// Writer reads its batches: the request is encoded one record at a time.
type recordReader struct {
	km         []kafka.Message
	idx        []int
	next       int
	rec        kafka.Record
	key, value bytesReader
}

func (r *recordReader) ReadRecord() (*kafka.Record, error) {
	if r.next >= len(r.idx) {
		return nil, io.EOF
	}
	m := &r.km[r.idx[r.next]]
	r.next++
	r.rec = kafka.Record{Time: m.Time, Headers: m.Headers}
	if m.Key != nil {
		r.key.Reset(m.Key)
		r.rec.Key = &r.key
	}
	if m.Value != nil {
		r.value.Reset(m.Value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}

// bytesReader is a kafka.Bytes over a byte slice.
type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }
