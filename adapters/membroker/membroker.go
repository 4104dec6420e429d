package membroker

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// Options configure a Broker. The zero value is valid.
type Options struct {
	// MaxQueued bounds the messages held per consumer group (waiting, delayed
	// and in flight). A publish that would exceed it fails with broker.ErrFull.
	// Zero means 100,000.
	MaxQueued int
	// MaxMessageSize is the largest broker.Message.Size accepted. Zero means
	// 1 MiB.
	MaxMessageSize int
}

// Broker is an in-process broker. It is safe for concurrent use.
type Broker struct {
	opts Options

	mu     sync.Mutex
	topics map[string]*topic
	subSeq uint64
}

// New returns an empty Broker.
func New(opts *Options) (*Broker, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxQueued < 0 || o.MaxMessageSize < 0 {
		return nil, fmt.Errorf("mem: negative limit in Options: %w", broker.ErrInvalidArgument)
	}
	if o.MaxQueued == 0 {
		o.MaxQueued = 100_000
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = 1 << 20
	}
	return &Broker{opts: o, topics: map[string]*topic{}}, nil
}

// NewPublisher returns a Publisher into b.
func (b *Broker) NewPublisher() *driver.Publisher {
	return driver.NewPublisher("mem", sender{b})
}

// NewConsumer returns a Consumer from b with the given options (nil means
// defaults). Dead letters go back into b.
func (b *Broker) NewConsumer(opts *broker.ConsumerOptions) (*driver.Consumer, error) {
	var o broker.ConsumerOptions
	if opts != nil {
		o = *opts
	}
	return driver.NewConsumer("mem", receiver{b}, sender{b}, o)
}

type topic struct {
	groups map[string]*queue
}

// topicLocked returns the named topic, creating it with its default group.
func (b *Broker) topicLocked(name string) *topic {
	t := b.topics[name]
	if t == nil {
		t = &topic{groups: map[string]*queue{broker.DefaultGroup: newQueue()}}
		b.topics[name] = t
	}
	return t
}

// entry is one message held in one group's queue.
type entry struct {
	seq         uint64
	msg         *broker.Message // immutable once stored
	publishedAt time.Time
	deliveries  int
	readyAt     time.Time
	holder      uint64 // subscription holding it in flight; 0 when not in flight
}

// queue is one consumer group's view of a topic.
type queue struct {
	seq       uint64
	ready     []*entry // sorted by seq
	delayed   []*entry
	inFlight  map[*entry]bool
	keyHolder map[string]uint64 // key -> subscription with a message of that key in flight
	keyCount  map[string]int
	consumers int
	wake      chan struct{} // closed and replaced when something changes
}

func newQueue() *queue {
	return &queue{inFlight: map[*entry]bool{}, keyHolder: map[string]uint64{}, keyCount: map[string]int{}, wake: make(chan struct{})}
}

func (q *queue) size() int { return len(q.ready) + len(q.delayed) + len(q.inFlight) }

func (q *queue) notify() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// insertReady puts e back among the ready entries in publish order.
func (q *queue) insertReady(e *entry) {
	i, _ := slices.BinarySearchFunc(q.ready, e.seq, func(x *entry, s uint64) int {
		switch {
		case x.seq < s:
			return -1
		case x.seq > s:
			return 1
		}
		return 0
	})
	q.ready = slices.Insert(q.ready, i, e)
}

// promote moves delayed entries that are due to ready; it returns when the
// next delayed entry becomes due (zero if none).
func (q *queue) promote(now time.Time) time.Time {
	var next time.Time
	kept := q.delayed[:0]
	for _, e := range q.delayed {
		if !e.readyAt.After(now) {
			q.insertReady(e)
			continue
		}
		kept = append(kept, e)
		if next.IsZero() || e.readyAt.Before(next) {
			next = e.readyAt
		}
	}
	clear(q.delayed[len(kept):])
	q.delayed = kept
	return next
}

func (q *queue) take(e *entry, sub uint64) {
	e.deliveries++
	e.holder = sub
	q.inFlight[e] = true
	if k := e.msg.Key; k != "" {
		q.keyHolder[k] = sub
		q.keyCount[k]++
	}
}

// settle removes e from flight; if back, it is queued again after delay.
func (q *queue) settle(e *entry, back bool, delay time.Duration) {
	if !q.inFlight[e] {
		return
	}
	delete(q.inFlight, e)
	e.holder = 0
	if k := e.msg.Key; k != "" {
		if q.keyCount[k]--; q.keyCount[k] == 0 {
			delete(q.keyCount, k)
			delete(q.keyHolder, k)
		}
	}
	if back {
		if delay > 0 {
			e.readyAt = time.Now().Add(delay)
			q.delayed = append(q.delayed, e)
		} else {
			q.insertReady(e)
		}
	}
	q.notify()
}
