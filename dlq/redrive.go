package dlq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/brokerkit/broker"
)

// Options bound a Peek or Redrive run.
type Options struct {
	// Limit is the most messages to return (Peek) or move (Redrive). Zero
	// means no limit: run until the dead-letter topic is idle.
	Limit int
	// Filter selects messages. Nil selects all. Redrive puts messages it does
	// not select back at the tail of the dead-letter topic.
	Filter func(*broker.Message) bool
	// To overrides the destination topic of Redrive; empty means each
	// message's HeaderOriginalTopic.
	To string
	// Idle ends the run when no message arrived for this long. Zero means 2s.
	// Before the first message the wait is at least FirstWait, since joining
	// a consumer group can take longer than Idle; when the consumer's Stats
	// say the dead-letter topic holds nothing, the run ends at once.
	Idle time.Duration
	// FirstWait bounds the wait for the first message when Stats say there
	// are messages to read (or cannot say). Zero means 30s.
	FirstWait time.Duration
	// DryRun makes Redrive report what it would move without moving anything:
	// every message is put back at the tail of the dead-letter topic.
	DryRun bool
	// Progress, if set, is called after each message with the counts so far.
	Progress func(Report)
}

// Report counts what a Peek or Redrive run did.
type Report struct {
	// Seen is the number of distinct messages read from the dead-letter topic.
	Seen int
	// Selected is the number that passed the filter (all, without one).
	Selected int
	// Moved is the number sent back to their topic (zero for Peek and DryRun).
	Moved int
	// Kept is the number put back at the tail of the dead-letter topic.
	Kept int
}

// Peek and Redrive read the dead-letter topic through c, which they run until
// they return; give them a consumer of their own with Concurrency 1 (the
// default), so that messages are read in order and a run ends when it meets
// a copy it put back itself.

// Peek returns up to opts.Limit messages from the dead-letter topic from,
// leaving them parked. The portable API has no browse operation, so Peek reads
// each message, publishes an identical copy to the tail of from, and only then
// acknowledges the original: a crash in between leaves a duplicate, never a
// loss. Messages come back with their dead-letter headers.
func Peek(ctx context.Context, c broker.Consumer, p broker.Publisher, from string, opts Options) ([]*broker.Message, Report, error) {
	opts.DryRun = true
	var out []*broker.Message
	var mu sync.Mutex
	rep, err := run(ctx, c, p, from, opts, func(m *broker.Message) {
		mu.Lock()
		out = append(out, m.Clone())
		mu.Unlock()
	})
	return out, rep, err
}

// Redrive sends messages parked in the dead-letter topic from back to their
// original topic (or opts.To), with the dead-letter headers removed and
// HeaderRedriveCount increased. Each message is published to its destination
// before it is acknowledged in from. Messages the filter rejects go back to the
// tail of from. The run ends at opts.Limit moved messages, when from has been
// idle for opts.Idle, when every message left was already seen, or when ctx
// ends.
func Redrive(ctx context.Context, c broker.Consumer, p broker.Publisher, from string, opts Options) (Report, error) {
	return run(ctx, c, p, from, opts, nil)
}

func run(ctx context.Context, c broker.Consumer, p broker.Publisher, from string, opts Options, peeked func(*broker.Message)) (Report, error) {
	if err := broker.ValidateTopic(from); err != nil {
		return Report{}, fmt.Errorf("dlq: %w", err)
	}
	if opts.Idle <= 0 {
		opts.Idle = 2 * time.Second
	}
	if opts.FirstWait <= 0 {
		opts.FirstWait = 30 * time.Second
	}
	firstWait := max(opts.Idle, opts.FirstWait)
	if sr, ok := c.(broker.StatsReader); ok {
		st, err := sr.Stats(ctx, from, "")
		switch {
		case err == nil && st.Depth == 0 && st.InFlight <= 0:
			return Report{}, nil // nothing parked, nothing leased: no need to join and wait
		case err != nil || st.Depth < 0:
			firstWait = opts.Idle // the figures are unknown: keep the plain idle rule
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	var (
		mu       sync.Mutex
		rep      Report
		ours     = map[string]bool{} // IDs of the copies this run put back
		activity = make(chan struct{}, 1)
	)
	handler := func(hctx context.Context, m *broker.Message) error {
		mu.Lock()
		done := ours[m.ID] || // went all the way round: this is a copy we put back
			opts.Limit > 0 && (peeked != nil && rep.Seen >= opts.Limit || peeked == nil && rep.Moved >= opts.Limit)
		if done {
			mu.Unlock()
			// Hand the message back untouched: a shutdown release does not
			// count as a failed attempt.
			stop()
			<-hctx.Done()
			return hctx.Err()
		}
		rep.Seen++
		mu.Unlock()

		selected := opts.Filter == nil || opts.Filter(m)
		if peeked != nil && selected {
			peeked(m)
		}
		var err error
		dest := destination(m, opts.To)
		moved := selected && !opts.DryRun && dest != ""
		if moved {
			err = p.Publish(hctx, dest, redriven(m))
		} else {
			cp := rotated(m)
			cp.ID = broker.NewID()
			mu.Lock()
			ours[cp.ID] = true
			mu.Unlock()
			err = p.Publish(hctx, from, cp)
		}
		if err != nil {
			mu.Lock()
			rep.Seen--
			mu.Unlock()
			return err
		}
		mu.Lock()
		if selected {
			rep.Selected++
		}
		if moved {
			rep.Moved++
		} else {
			rep.Kept++
		}
		r := rep
		mu.Unlock()
		if opts.Progress != nil {
			opts.Progress(r)
		}
		select {
		case activity <- struct{}{}:
		default:
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- c.Consume(runCtx, from, handler) }()

	idle := time.NewTimer(firstWait)
	defer idle.Stop()
	var err error
wait:
	for {
		select {
		case <-activity:
			idle.Reset(opts.Idle)
		case <-idle.C:
			stop()
		case err = <-done:
			break wait
		}
	}
	if errors.Is(err, context.Canceled) && ctx.Err() == nil {
		err = nil // we stopped it
	}
	mu.Lock()
	defer mu.Unlock()
	return rep, err
}

func destination(m *broker.Message, to string) string {
	if to != "" {
		return to
	}
	return m.Headers[HeaderOriginalTopic]
}

// originalID is the ID the message had when it was dead-lettered.
func originalID(m *broker.Message) string {
	if id := m.Headers[HeaderOriginalID]; id != "" {
		return id
	}
	return m.ID
}

// rotated is the copy of m that goes back to the tail of the dead-letter
// topic, remembering the original ID. The caller gives it a fresh ID, since
// brokers that deduplicate by ID (SQS FIFO) would drop a second message with
// the same one, and so that the run knows its own copies when they come round.
func rotated(m *broker.Message) *broker.Message {
	cp := m.Clone()
	if cp.Headers == nil {
		cp.Headers = map[string]string{}
	}
	cp.Headers[HeaderOriginalID] = originalID(m)
	return cp
}

// redriven is m with its original ID, without dead-letter headers, and with
// the redrive count raised.
func redriven(m *broker.Message) *broker.Message {
	cp := m.Clone()
	cp.ID = originalID(m)
	n, _ := strconv.Atoi(cp.Headers[HeaderRedriveCount])
	maps.DeleteFunc(cp.Headers, func(k, _ string) bool { return strings.HasPrefix(k, "x-dlq-") })
	cp.Headers[HeaderRedriveCount] = strconv.Itoa(n + 1)
	return cp
}
