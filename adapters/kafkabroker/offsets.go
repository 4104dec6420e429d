package kafkabroker

import "slices"

// offsets tracks, for one subscription, which fetched offsets of each
// partition are finished, so that a commit never passes a message that is
// still being handled: the committed position of a partition is the offset
// after the longest finished prefix of what was fetched.
//
// A rebalance restarts every partition at its committed offset, which may be
// behind what this member already fetched (it commits on an interval) or
// ahead (another member owned the partition meanwhile). A fetch that goes
// backwards starts a new epoch of the partition; the previous epoch stays
// reachable so that offsets it already finished are not handled again, and
// offsets it is still handling are not handed out twice: the new entry waits
// for the old one and finishes with it. Only the current epoch commits.
//
// offsets is not safe for concurrent use; the subscription guards it.
type offsets struct {
	parts map[int]*epoch
}

// epoch is the run of fetches of one partition between two rewinds.
type epoch struct {
	partition int
	start     int64    // first offset fetched in the epoch
	last      int64    // last offset fetched
	pending   []*entry // fetched entries from the first unfinished one on
	head      int      // index in pending of the first unfinished entry
	next      int64    // every fetched offset below next is finished; -1 before any
	committed int64    // the last position committed, or start
	prev      *epoch   // the epoch before the rewind that started this one
	// waiters are, by offset, the entries of the next epoch that finish with
	// a running entry of this one; rare, so kept here rather than in every
	// entry.
	waiters map[int64][]*entry
}

type state uint8

const (
	running  state = iota // handed to the consumer, not settled yet
	finished              // acknowledged (handled or dead-lettered)
	released              // handed back unfinished: never committed past
)

// entry is one fetched offset: 24 bytes, one for every message received.
type entry struct {
	ep        *epoch
	offset    int64
	partition int32
	state     state
}

func newOffsets() *offsets { return &offsets{parts: map[int]*epoch{}} }

// track records a fetched offset in e, a zero entry. deliver is false when the
// offset was already finished, or is still running, in the previous epoch: the
// message must not be handled again.
func (o *offsets) track(e *entry, partition int, offset int64) (deliver bool) {
	ep := o.parts[partition]
	if ep == nil || offset <= ep.last {
		// The group (re)started the partition here, at its committed offset
		// or its initial offset: nothing below needs committing.
		ep = &epoch{partition: partition, start: offset, last: offset - 1, next: -1, committed: offset, prev: ep}
		if ep.prev != nil {
			ep.prev.prev = nil // one epoch back is enough to span a rebalance
		}
		o.parts[partition] = ep
	}
	e.ep, e.offset = ep, offset
	ep.pending = append(ep.pending, e)
	ep.last = offset
	if p := ep.prev; p != nil {
		if offset > p.last {
			ep.prev = nil // past everything the previous epoch fetched
		} else if old := p.find(offset); old != nil {
			switch old.state {
			case finished:
				e.finish(true)
				return false
			case running:
				if p.waiters == nil {
					p.waiters = map[int64][]*entry{}
				}
				p.waiters[offset] = append(p.waiters[offset], e)
				return false
			}
		}
	}
	return true
}

// skip records that the fetch position of partition moved to next past
// records that are never delivered (transaction markers, aborted
// transactions), so that the commit position can move past them once
// everything delivered before them is finished. It stands a finished entry
// in for the last skipped offset.
func (o *offsets) skip(partition int, next int64) {
	if ep := o.parts[partition]; ep != nil && next-1 <= ep.last {
		return // nothing skipped after the last record delivered
	}
	e := &entry{}
	if o.track(e, partition, next-1) {
		e.finish(true)
	}
}

// find returns the entry of offset in the epoch, or a finished stand-in when
// the offset is in the epoch's finished prefix, or nil.
func (ep *epoch) find(offset int64) *entry {
	if offset >= ep.start && offset < ep.next {
		return &entry{offset: offset, state: finished}
	}
	live := ep.pending[ep.head:]
	i, ok := slices.BinarySearchFunc(live, offset, func(e *entry, off int64) int {
		switch {
		case e.offset < off:
			return -1
		case e.offset > off:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return live[i]
}

// finish settles e, and the entries waiting on it, as finished (ok) or
// released, and moves its epoch's commit position over the finished prefix.
func (e *entry) finish(ok bool) {
	if e.state != running {
		return
	}
	e.state = released
	if ok {
		e.state = finished
	}
	ep := e.ep
	if ep == nil {
		return // never tracked: nothing waits on it, no position to move
	}
	if ws, waited := ep.waiters[e.offset]; waited {
		delete(ep.waiters, e.offset)
		for _, w := range ws {
			w.finish(ok)
		}
	}
	if ok {
		ep.advance()
	}
}

func (ep *epoch) advance() {
	for ep.head < len(ep.pending) && ep.pending[ep.head].state == finished {
		ep.next = ep.pending[ep.head].offset + 1
		ep.pending[ep.head] = nil
		ep.head++
	}
	if ep.head >= 256 && ep.head*2 >= len(ep.pending) {
		n := copy(ep.pending, ep.pending[ep.head:])
		clear(ep.pending[n:])
		ep.pending = ep.pending[:n]
		ep.head = 0
	}
}

// commits returns the position to commit (the offset after the finished
// prefix) of every partition whose position moved since the last commit.
func (o *offsets) commits() map[int]int64 {
	var out map[int]int64
	for p, ep := range o.parts {
		if ep.next > ep.committed {
			if out == nil {
				out = map[int]int64{}
			}
			out[p] = ep.next
		}
	}
	return out
}

// committed records that positions were committed.
func (o *offsets) committed(positions map[int]int64) {
	for p, pos := range positions {
		if ep := o.parts[p]; ep != nil && pos > ep.committed {
			ep.committed = pos
		}
	}
}
