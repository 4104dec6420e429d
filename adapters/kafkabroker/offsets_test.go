package kafkabroker

import (
	"maps"
	"slices"
	"testing"

	"github.com/segmentio/kafka-go"
)

// positions returns the committable position per partition.
func positions(o *offsets) map[int]int64 {
	out := map[int]int64{}
	maps.Copy(out, o.commits())
	return out
}

func trackAll(t *testing.T, o *offsets, partition int, offs ...int64) []*entry {
	t.Helper()
	var es []*entry
	for _, off := range offs {
		e := &entry{}
		if !o.track(e, partition, off) {
			t.Fatalf("offset %d of partition %d not delivered", off, partition)
		}
		es = append(es, e)
	}
	return es
}

func TestOffsetsCommitContiguousPrefix(t *testing.T) {
	o := newOffsets()
	es := trackAll(t, o, 0, 10, 11, 12, 13)
	if got := positions(o); len(got) != 0 {
		t.Fatalf("commits before any ack: %v", got)
	}
	es[1].finish(true)
	es[3].finish(true)
	if got := positions(o); len(got) != 0 {
		t.Fatalf("commit past the unfinished offset 10: %v", got)
	}
	es[0].finish(true)
	if got := positions(o)[0]; got != 12 {
		t.Fatalf("position = %d, want 12 (offset 12 still running)", got)
	}
	es[2].finish(true)
	msgs := o.commits()
	if len(msgs) != 1 || msgs[0] != 14 {
		t.Fatalf("commits = %+v, want position 14", msgs)
	}
	o.committed(msgs)
	if got := o.commits(); len(got) != 0 {
		t.Fatalf("commits after committing everything: %+v", got)
	}
}

func TestOffsetsGapsAndPartitions(t *testing.T) {
	o := newOffsets()
	// Offsets need not be consecutive (compaction, transaction markers).
	a := trackAll(t, o, 0, 5, 9, 20)
	b := trackAll(t, o, 1, 0, 1)
	for _, e := range append(a, b...) {
		e.finish(true)
	}
	got := positions(o)
	if got[0] != 21 || got[1] != 2 {
		t.Fatalf("positions = %v, want 0:21 1:2", got)
	}
}

func TestOffsetsReleasedBlocksCommit(t *testing.T) {
	o := newOffsets()
	es := trackAll(t, o, 0, 0, 1, 2)
	es[0].finish(true)
	es[1].finish(false) // handed back at shutdown
	es[2].finish(true)
	if got := positions(o)[0]; got != 1 {
		t.Fatalf("position = %d, want 1: never past a released offset", got)
	}
}

// A rebalance restarts a partition at its committed offset, behind what was
// fetched: finished offsets are not delivered again, running ones finish with
// their first delivery, and only the new epoch commits.
func TestOffsetsRewindAfterRebalance(t *testing.T) {
	o := newOffsets()
	old := trackAll(t, o, 0, 0, 1, 2, 3, 4)
	old[0].finish(true)
	old[1].finish(true)
	old[3].finish(true)
	o.committed(o.commits()) // position 2
	// Offset 2 and 4 are still running when the group restarts at 2.
	var fresh []*entry
	var delivered []int64
	for off := int64(2); off <= 6; off++ {
		e := &entry{}
		deliver := o.track(e, 0, off)
		fresh = append(fresh, e)
		if deliver {
			delivered = append(delivered, off)
		}
	}
	if want := []int64{5, 6}; !slices.Equal(delivered, want) {
		t.Fatalf("delivered %v after the rewind, want %v", delivered, want)
	}
	fresh[3].finish(true) // 5
	fresh[4].finish(true) // 6
	if got := positions(o); len(got) != 0 {
		t.Fatalf("committed %v while offset 2 still runs", got)
	}
	old[2].finish(true) // 2 finishes: its twin in the new epoch too
	if got := positions(o)[0]; got != 4 {
		t.Fatalf("position = %d, want 4 (offset 4 still running)", got)
	}
	old[4].finish(true)
	if got := positions(o)[0]; got != 7 {
		t.Fatalf("position = %d, want 7", got)
	}
}

func TestOffsetsRewindReleasedIsDelivered(t *testing.T) {
	o := newOffsets()
	old := trackAll(t, o, 0, 0, 1)
	old[0].finish(false)
	old[1].finish(true)
	if !o.track(&entry{}, 0, 0) {
		t.Fatal("an offset released before the rewind must be delivered again")
	}
	if o.track(&entry{}, 0, 1) {
		t.Fatal("an offset finished before the rewind was delivered again")
	}
}

func TestOffsetsForwardJump(t *testing.T) {
	o := newOffsets()
	es := trackAll(t, o, 0, 0, 1)
	// Another member committed up to 50 while this one lost the partition.
	jump := trackAll(t, o, 0, 50, 51)
	for _, e := range append(jump, es...) {
		e.finish(true)
	}
	if got := positions(o)[0]; got != 52 {
		t.Fatalf("position = %d, want 52", got)
	}
}

func TestOffsetsCompaction(t *testing.T) {
	o := newOffsets()
	for off := range int64(10_000) {
		e := &entry{}
		o.track(e, 0, off)
		e.finish(true)
	}
	ep := o.parts[0]
	if len(ep.pending) > 512 {
		t.Fatalf("%d entries kept after all finished", len(ep.pending))
	}
	if ep.next != 10_000 {
		t.Fatalf("next = %d", ep.next)
	}
}

// deliveries through a rewind: records still running in the previous epoch
// are not delivered again, yet their entries in the slab stay tracked (the
// offsets point at them), so when the old run finishes, the commit moves past
// them. Reusing a slab slot for the next record would lose that.
func TestDeliveriesKeepUndeliveredEntries(t *testing.T) {
	s := &subscription{offsets: newOffsets()}
	slab := func(offs ...int64) []received {
		rs := make([]received, len(offs))
		for i, off := range offs {
			rs[i].fill(&kafka.Message{Topic: "t", Partition: 0, Offset: off}, &entry{})
		}
		return rs
	}
	first, _ := s.deliveries(nil, slab(0, 1, 2), nil, 0, -1)
	if len(first) != 3 {
		t.Fatalf("first batch: %d deliveries, want 3", len(first))
	}
	// The group restarts the partition at 0 while 0-2 still run.
	again, _ := s.deliveries(nil, slab(0, 1, 2, 3), nil, 0, -1)
	if len(again) != 1 || again[0].Message.ID != "t/0/3" {
		t.Fatalf("after the rewind: %d deliveries (%v), want only offset 3", len(again), again)
	}
	again[0].Handle.(*entry).finish(true)
	for _, d := range first {
		d.Handle.(*entry).finish(true)
	}
	if got := positions(s.offsets)[0]; got != 4 {
		t.Fatalf("position = %d, want 4: every offset finished", got)
	}
}

// Records the consumer never delivers (transaction markers, aborted
// transactions) do not hold the commit position back: skip moves it past
// them once what was delivered before them is finished.
func TestOffsetsSkipMovesPastUndelivered(t *testing.T) {
	o := newOffsets()
	es := trackAll(t, o, 0, 10, 11)
	o.skip(0, 14) // 12 and 13 were a marker and an aborted record
	if got, ok := o.commits()[0]; ok {
		t.Fatalf("position %d to commit before anything finished", got)
	}
	es[0].finish(true)
	if got := positions(o)[0]; got != 11 {
		t.Fatalf("position = %d, want 11 (11 still running)", got)
	}
	es[1].finish(true)
	if got := positions(o)[0]; got != 14 {
		t.Fatalf("position = %d, want 14: past the skipped 12 and 13", got)
	}
	o.skip(0, 14) // again, nothing new skipped
	o.skip(1, 7)  // a partition whose first records were all skipped
	if got := positions(o); got[0] != 14 || got[1] != 7 {
		t.Fatalf("positions = %v, want 14 and 7", got)
	}
}
