package kafkabroker

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
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
func handed(t *testing.T, offset int64, hint int, rr protocol.RecordReader) ([]run, int64) {
	t.Helper()
	gen := &kafka.Generation{}
	s := &subscription{topic: "t", runs: make(chan run, 100)}
	f := &fetcher{s: s, gen: gen, partition: 2, offset: offset, hint: hint}
	if err := f.hand(context.Background(), rr, 1000); err != nil {
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

	// A response of nothing but a transaction marker still moves the
	// fetch position past it, or the partition would fetch it forever.
	runs, next = handed(t, 20, 1, &protocol.RecordStream{Records: []protocol.RecordReader{
		&protocol.ControlBatch{Records: protocol.NewRecordReader(protocol.Record{Offset: 20})},
	}})
	if len(runs) != 0 || next != 21 {
		t.Fatalf("control batch alone: %d runs, next %d; want none and 21", len(runs), next)
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
