package kafkabroker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/segmentio/kafka-go"

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
// of one Send all go to one partition, picked at random for each Send (the
// Java client's sticky partitioning, at the grain of a Send): one request
// instead of one per partition. A partition's records go in requests of up
// to perBatch records and limit bytes, one after another, so a key's order
// holds; the partitions of a Send are written at once.
func (s *sender) produce(ctx context.Context, topic string, msgs []*broker.Message, km []kafka.Message) (failed []int, err error) {
	if len(km) == 0 {
		return nil, nil
	}
	all := func() []int {
		idx := make([]int, len(km))
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	n, err := s.partitions(ctx, topic)
	if err != nil {
		return all(), err
	}
	byPartition := make([][]int, n)
	var ids []int // partition numbers, for the balancer
	unkeyed := -1
	for i := range km {
		p := unkeyed
		switch {
		case len(km[i].Key) > 0:
			if ids == nil {
				ids = make([]int, n)
				for j := range ids {
					ids[j] = j
				}
			}
			p = s.balancer.Balance(km[i], ids...)
		case p < 0:
			unkeyed = rand.IntN(n)
			p = unkeyed
		}
		byPartition[p] = append(byPartition[p], i)
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	run := func(p int, idx []int) {
		f, e := s.producePartition(ctx, topic, p, msgs, km, idx)
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
	last := -1
	for p, idx := range byPartition {
		if len(idx) == 0 {
			continue
		}
		if last >= 0 {
			q := last
			wg.Go(func() { run(q, byPartition[q]) })
		}
		last = p
	}
	run(last, byPartition[last]) // the last (often the only) one on this goroutine
	wg.Wait()
	slices.Sort(failed)
	return failed, err
}

// partitions is how many partitions topic has, from the transport's metadata
// cache (no round trip): kafka.UnknownTopicOrPartition when the cache does not
// know the topic, which the Writer's fallback then refreshes.
func (s *sender) partitions(ctx context.Context, topic string) (int, error) {
	md, err := s.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, t := range md.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return 0, t.Error
			}
			if len(t.Partitions) > 0 {
				return len(t.Partitions), nil
			}
		}
	}
	return 0, kafka.UnknownTopicOrPartition
}

// producePartition writes the records km[idx] to partition p, in requests of
// up to perBatch records and limit bytes, and returns the indices from the
// first request that failed on, with its error.
func (s *sender) producePartition(ctx context.Context, topic string, p int, msgs []*broker.Message, km []kafka.Message, idx []int) ([]int, error) {
	rr := &recordReader{km: km}
	for start := 0; start < len(idx); {
		end, size := start, batchOverhead
		for end < len(idx) && end-start < s.perBatch {
			n := recordSize(msgs[idx[end]])
			if end > start && size+n > s.limit {
				break
			}
			size += n
			end++
		}
		rr.idx, rr.next = idx[start:end], 0
		s.requests.Add(1)
		res, err := s.client.Produce(ctx, &kafka.ProduceRequest{
			Topic:        topic,
			Partition:    p,
			RequiredAcks: s.lone.RequiredAcks,
			Compression:  s.lone.Compression,
			Records:      rr,
		})
		if err == nil && res != nil { // res is nil under acks=none: no response to wait for
			err = res.Error
			for _, e := range res.RecordErrors {
				if err == nil {
					err = e
				}
			}
		}
		if err != nil {
			return idx[start:], err
		}
		s.produced.Add(int64(end - start))
		start = end
	}
	return nil, nil
}

// fallback writes the records of km that produce did not write (failed,
// because of cause) through the lone Writer, with its retries, and returns
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
		if err = s.write(ctx, s.lone, topic, rest); err == nil {
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
