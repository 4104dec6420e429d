package kafkabroker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// record is a fetched record at offset carrying the ID header, a key and a
// value of size bytes.
func record(offset int64, size int) protocol.Record {
	value := bytes.Repeat([]byte{byte(offset)}, size)
	return protocol.Record{
		Offset:  offset,
		Key:     protocol.NewBytes(fmt.Appendf(nil, "k%d", offset)),
		Value:   protocol.NewBytes(value),
		Headers: []protocol.Header{{Key: HeaderID, Value: fmt.Appendf(nil, "id-%d", offset)}, {Key: "h", Value: []byte("v")}},
	}
}

func fetchedRecords(from, to int64, size int) []protocol.Record {
	var rs []protocol.Record
	for off := from; off < to; off++ {
		rs = append(rs, record(off, size))
	}
	return rs
}

// handed runs hand on rr with a fetcher of partition 2 at offset and
// returns the runs it queued and where the next fetch would start.
func handed(t *testing.T, offset int64, hint int, rr protocol.RecordReader, aborted ...fetchapi.ResponseTransaction) ([]run, int64) {
	t.Helper()
	gen := &kafka.Generation{}
	s := &subscription{topic: "t", runs: make(chan run, 100)}
	f := &fetcher{s: s, gen: gen, partition: 2, offset: offset, handed: offset, hint: hint}
	if err := f.hand(context.Background(), rr, 1000, newAborts(aborted)); err != nil {
		t.Fatalf("hand: %v", err)
	}
	close(s.runs)
	var runs []run
	for r := range s.runs {
		if r.gen != gen {
			t.Fatal("a run of another generation")
		}
		runs = append(runs, r)
	}
	return runs, f.offset
}

// A response starts at the start of a record batch, so it may repeat
// records before the requested offset, and it may hold control batches
// (transaction markers): neither reaches the consumer, and the next fetch
// starts after both. Records come out in order, in runs of at most maxRun,
// each with its own key, value, ID and headers.
func TestHandSkipsEarlierAndControlRecords(t *testing.T) {
	marker := protocol.Record{Offset: 6, Key: protocol.NewBytes([]byte{0, 0, 0, 1}), Value: protocol.NewBytes([]byte{0, 0, 0, 0, 0, 0})}
	rr := &protocol.RecordStream{Records: []protocol.RecordReader{
		&protocol.RecordBatch{Records: protocol.NewRecordReader(fetchedRecords(3, 6, 10)...)},
		&protocol.ControlBatch{Records: protocol.NewRecordReader(marker)},
		&protocol.RecordBatch{Records: protocol.NewRecordReader(fetchedRecords(7, 7+maxRun+44, 10)...)},
		&protocol.RecordBatch{Records: protocol.NewRecordReader(record(7+maxRun+44, 100_000))}, // a large one
	}}
	runs, next := handed(t, 5, 1, rr)
	want := []int64{5}
	for off := int64(7); off <= 7+maxRun+44; off++ {
		want = append(want, off)
	}
	var got []int64
	for _, r := range runs {
		if len(r.recs) == 0 || len(r.recs) > maxRun {
			t.Fatalf("a run of %d records, want 1 to %d", len(r.recs), maxRun)
		}
		for i := range r.recs {
			rc := &r.recs[i]
			off := rc.entry().offset
			got = append(got, off)
			m := rc.msg
			size := 10
			if off == 7+maxRun+44 {
				size = 100_000
			}
			if m.ID != fmt.Sprintf("id-%d", off) || m.Key != fmt.Sprintf("k%d", off) || m.Headers["h"] != "v" ||
				!bytes.Equal(m.Body, bytes.Repeat([]byte{byte(off)}, size)) || m.Topic != "t" || rc.entry().partition != 2 {
				t.Fatalf("offset %d: message %+v", off, m)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered offsets %v,\nwant %v", got, want)
	}
	if next != 7+maxRun+45 {
		t.Fatalf("next fetch at %d, want %d", next, 7+maxRun+45)
	}

	if last := runs[len(runs)-1]; last.next != next || last.partition != 2 {
		t.Fatalf("the last run ends at %d of partition %d, want %d of 2", last.next, last.partition, next)
	}

	// A response of nothing but a transaction marker still moves the
	// fetch position past it, or the partition would fetch it forever, and
	// hands over a run without records, so that commits move past it too.
	runs, next = handed(t, 20, 1, &protocol.RecordStream{Records: []protocol.RecordReader{
		&protocol.ControlBatch{Records: protocol.NewRecordReader(protocol.Record{Offset: 20})},
	}})
	if len(runs) != 1 || len(runs[0].recs) != 0 || runs[0].next != 21 || next != 21 {
		t.Fatalf("control batch alone: runs %+v, next %d; want one empty run to 21", runs, next)
	}
}

// Runs are sized from the last response: a response like the last fills
// one run exactly; a larger one goes on in runs as large as what it held so
// far (at least 16), so that a run is never more than half empty.
func TestHandSizesRunsFromTheLastResponse(t *testing.T) {
	runs, _ := handed(t, 0, 5, protocol.NewRecordReader(fetchedRecords(0, 5, 1)...))
	if len(runs) != 1 || len(runs[0].recs) != 5 || cap(runs[0].recs) != 5 {
		t.Fatalf("5 records after a response of 5: runs %d, first len %d cap %d", len(runs), len(runs[0].recs), cap(runs[0].recs))
	}
	runs, _ = handed(t, 0, 2, protocol.NewRecordReader(fetchedRecords(0, 40, 1)...))
	var sizes []int
	for _, r := range runs {
		sizes = append(sizes, cap(r.recs))
	}
	if fmt.Sprint(sizes) != "[2 16 18 36]" {
		t.Fatalf("run capacities %v for 40 records after a response of 2", sizes)
	}
}

// Receive drops the runs fetched in a generation that has ended: the group
// restarts their partitions at the committed offset in the next one.
func TestReceiveDropsRunsOfAnEndedGeneration(t *testing.T) {
	old, cur := &kafka.Generation{}, &kafka.Generation{}
	s := &subscription{topic: "t", runs: make(chan run, 4), errs: make(chan error, 1), offsets: newOffsets(), gen: cur}
	mk := func(gen *kafka.Generation, offs ...int64) run {
		rs := make([]received, len(offs))
		es := make([]entry, len(offs))
		for i, off := range offs {
			rs[i].fill(&kafka.Message{Topic: "t", Partition: 0, Offset: off}, &es[i])
		}
		return run{gen: gen, recs: rs}
	}
	s.runs <- mk(old, 0, 1)
	s.runs <- mk(cur, 5, 6, 7)
	s.runs <- mk(cur, 8)
	ds, err := s.Receive(context.Background(), 3)
	if err != nil || len(ds) != 3 || ds[0].Message.ID != "t/0/5" || ds[2].Message.ID != "t/0/7" {
		t.Fatalf("Receive = %d deliveries (%v), %v; want offsets 5-7", len(ds), ds, err)
	}
	ds, err = s.Receive(context.Background(), 3)
	if err != nil || len(ds) != 1 || ds[0].Message.ID != "t/0/8" {
		t.Fatalf("second Receive = %v, %v; want offset 8", ds, err)
	}

	// What is left of a run when its generation ends is dropped too.
	s.runs <- mk(cur, 9, 10, 11, 12)
	if ds, err = s.Receive(context.Background(), 2); err != nil || len(ds) != 2 || ds[1].Message.ID != "t/0/10" {
		t.Fatalf("third Receive = %v, %v; want offsets 9-10", ds, err)
	}
	next := &kafka.Generation{}
	s.mu.Lock()
	s.gen = next
	s.mu.Unlock()
	s.runs <- mk(next, 0)
	if ds, err = s.Receive(context.Background(), 4); err != nil || len(ds) != 1 || ds[0].Message.ID != "t/0/0" {
		t.Fatalf("Receive after the generation ended = %v, %v; want only offset 0 of the new one", ds, err)
	}
}

// Under read_committed the broker lists the aborted transactions of a
// response; their batches are skipped from each one's first offset up to its
// producer's abort marker, while committed transactions, plain batches and a
// later transaction of the same producer are delivered.
func TestHandSkipsAbortedTransactions(t *testing.T) {
	txn := protocol.Transactional
	batch := func(producer int64, attrs protocol.Attributes, from, to int64) *protocol.RecordBatch {
		return &protocol.RecordBatch{ProducerID: producer, Attributes: attrs, BaseOffset: from, Records: protocol.NewRecordReader(fetchedRecords(from, to, 1)...)}
	}
	marker := func(producer, offset int64, kind byte) *protocol.ControlBatch {
		return &protocol.ControlBatch{ProducerID: producer, BaseOffset: offset, Records: protocol.NewRecordReader(protocol.Record{
			Offset: offset, Key: protocol.NewBytes([]byte{0, 0, 0, kind}), Value: protocol.NewBytes([]byte{0, 0, 0, 0, 0, 0}),
		})}
	}
	response := func() protocol.RecordReader {
		return &protocol.RecordStream{Records: []protocol.RecordReader{
			batch(7, txn, 0, 2), // aborted below
			batch(8, txn, 2, 3), // committed below
			batch(-1, 0, 3, 4),  // not transactional
			marker(7, 4, 0),     // abort of producer 7
			marker(8, 5, 1),     // commit of producer 8
			batch(7, txn, 6, 7), // producer 7's next transaction: not aborted
			batch(9, txn, 7, 9), // aborted, its marker in a later response
		}}
	}
	offsets := func(runs []run) []int64 {
		var out []int64
		for _, r := range runs {
			for i := range r.recs {
				out = append(out, r.recs[i].entry().offset)
			}
		}
		return out
	}
	runs, next := handed(t, 0, 10, response(),
		fetchapi.ResponseTransaction{ProducerID: 9, FirstOffset: 7},
		fetchapi.ResponseTransaction{ProducerID: 7, FirstOffset: 0})
	if got := fmt.Sprint(offsets(runs)); got != "[2 3 6]" || next != 9 || runs[len(runs)-1].next != 9 {
		t.Fatalf("with aborted transactions: delivered %s, next %d; want [2 3 6] and 9, the last run's end too", got, next)
	}
	runs, next = handed(t, 0, 10, response())
	if got := fmt.Sprint(offsets(runs)); got != "[0 1 2 3 6 7 8]" || next != 9 {
		t.Fatalf("without: delivered %s, next %d; want every data record and 9", got, next)
	}
}

// A fetcher whose connections route by a stale layout (here: partitions
// added since the transport last looked, with its own refresh an hour away)
// makes the transport learn the layout again, and then fetches.
func TestFetchRelearnsTheLayout(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	b, err := New(brokers, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := b.a
	a.transport.MetadataTTL = time.Hour
	t.Cleanup(a.transport.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := conformance.RandomName("relearn")
	if err := b.CreateTopic(ctx, topic, 1); err != nil { // the transport now knows 1 partition
		t.Fatal(err)
	}
	other := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		_, _ = other.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})
	res, err := other.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 3}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatalf("CreatePartitions: %v", err)
	}
	for { // partition 2 takes a record once it has a leader
		pr, err := other.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 2, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes([]byte("on partition 2"))})})
		if err == nil {
			err = pr.Error
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("producing to partition 2: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	s := &subscription{r: &receiver{a: a}, topic: topic, runs: make(chan run, 4), errs: make(chan error, 1), log: slog.Default()}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.fetch(fctx, &kafka.Generation{}, kafka.PartitionAssignment{ID: 2, Offset: 0})
	}()
	defer func() { stop(); <-done }()
	select {
	case r := <-s.runs:
		if len(r.recs) != 1 || string(r.recs[0].msg.Body) != "on partition 2" {
			t.Fatalf("fetched %d records from partition 2, want the one produced", len(r.recs))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("partition 2 not fetched within 10 s (the layout relearned %d times)", a.relearns.Load())
	}
	if a.relearns.Load() == 0 {
		t.Fatal("fetched without relearning the layout: the test did not set up a stale one")
	}
}
