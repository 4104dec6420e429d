package sqsbroker

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// sender is the driver.Sender over SendMessageBatch.
type sender struct{ b *Broker }

var (
	_ driver.Sender      = (*sender)(nil)
	_ driver.StatsReader = (*sender)(nil)
)

// MaxMessageSize is the SQS limit less sizeReserve for the attribute names
// and types the encoding adds: a message with a text body and a few headers
// within it always fits. Send measures the exact encoding of each message
// before sending any, so a body that must be base64-encoded, or many headers,
// cannot slip past the SQS limit either: it fails with ErrMessageTooLarge.
func (s *sender) MaxMessageSize() int { return s.b.MaxMessageSize() }

func (s *sender) Close() error { return nil }

func (s *sender) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	return s.b.Stats(ctx, topic, group)
}

// Send implements driver.Sender. Messages go in batches of up to 10 within the
// byte limit. On a standard queue the batches are sent concurrently. On a
// FIFO queue each message group is assigned to one of PublishConcurrency
// lanes, and a lane sends its batches one after the other, so the messages of
// one group reach SQS in the order given; once a message of a group fails,
// the later messages of that group in later batches are not sent (they fail
// too), so that a retry of the failed ones cannot land behind them. Entries
// of the batch the failed one was in are one SQS call and may have been
// accepted.
func (s *sender) Send(ctx context.Context, topic string, msgs []*broker.Message) error {
	q, err := s.b.queue(ctx, topic, s.b.specFor(topic, broker.DeadLetterTopic(topic), 0))
	if err != nil {
		return err
	}
	out := make([]outgoing, len(msgs))
	for i, m := range msgs {
		if out[i], err = encode(i, m, q.fifo, s.b.opts.MaxMessageSize); err != nil {
			return fmt.Errorf("sqs: publish to %q: %w", topic, err)
		}
	}
	lanes := s.lanes(q.fifo, out)
	res := &results{topic: topic}
	if len(lanes) == 1 {
		s.sendLane(ctx, q, lanes[0], res)
	} else {
		var wg sync.WaitGroup
		for _, lane := range lanes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.sendLane(ctx, q, lane, res)
			}()
		}
		wg.Wait()
	}
	if len(res.failed) > 0 {
		s.b.forget(topic, res.first)
	}
	return res.err(len(msgs))
}

// lanes splits the messages into independent sequences of batches. A
// standard queue has one lane per batch; a FIFO queue has one per group hash.
func (s *sender) lanes(fifo bool, out []outgoing) [][][]outgoing {
	n := s.b.opts.PublishConcurrency
	if !fifo {
		batches := s.batches(out)
		lanes := make([][][]outgoing, min(n, len(batches)))
		for i, b := range batches {
			lanes[i%len(lanes)] = append(lanes[i%len(lanes)], b)
		}
		return lanes
	}
	byLane := make([][]outgoing, n)
	for _, o := range out {
		h := fnv.New32a()
		h.Write([]byte(o.group))
		i := int(h.Sum32() % uint32(n))
		byLane[i] = append(byLane[i], o)
	}
	var lanes [][][]outgoing
	for _, l := range byLane {
		if len(l) > 0 {
			lanes = append(lanes, s.batches(l))
		}
	}
	return lanes
}

// batches cuts out into batches of up to 10 entries and the byte limit, in order.
func (s *sender) batches(out []outgoing) [][]outgoing {
	var all [][]outgoing
	start, size := 0, 0
	for i, o := range out {
		if i-start == maxPublishBatch || size+o.size > s.b.opts.MaxMessageSize {
			all = append(all, out[start:i])
			start, size = i, 0
		}
		size += o.size
	}
	if start < len(out) {
		all = append(all, out[start:])
	}
	return all
}

func (s *sender) sendLane(ctx context.Context, q *queue, lane [][]outgoing, res *results) {
	var blocked map[string]int // FIFO group -> index of its message that failed
	for _, batch := range lane {
		in := &sqs.SendMessageBatchInput{QueueUrl: aws.String(q.url)}
		sent := make(map[string]outgoing, len(batch))
		for _, o := range batch {
			if at, ok := blocked[o.group]; ok {
				res.fail(o, fmt.Errorf("sqs: publish to %q: not sent, to keep the order of its group: message #%d failed: %w",
					q.topic, at, broker.ErrUnavailable))
				continue
			}
			in.Entries = append(in.Entries, o.entry)
			sent[*o.entry.Id] = o
		}
		if len(in.Entries) == 0 {
			continue
		}
		var failed []outgoing
		resp, err := s.b.api.SendMessageBatch(ctx, in)
		if err != nil {
			err = wrap("publish to", q.topic, err)
			for _, o := range batch {
				if _, ok := sent[*o.entry.Id]; ok {
					res.fail(o, err)
					failed = append(failed, o)
				}
			}
		} else {
			for _, f := range resp.Failed {
				o, ok := sent[aws.ToString(f.Id)]
				if !ok {
					continue
				}
				res.fail(o, entryError("publish to", q.topic, aws.ToString(f.Code), aws.ToString(f.Message), f.SenderFault))
				failed = append(failed, o)
			}
		}
		if q.fifo {
			for _, o := range failed {
				if blocked == nil {
					blocked = map[string]int{}
				}
				if _, ok := blocked[o.group]; !ok {
					blocked[o.group] = o.index
				}
			}
		}
	}
}

// results collects the failed messages of one Send.
type results struct {
	topic  string
	mu     sync.Mutex
	failed []broker.FailedMessage
	first  error
}

func (r *results) fail(o outgoing, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first == nil {
		r.first = err
	}
	r.failed = append(r.failed, broker.FailedMessage{Index: o.index, ID: o.id, Err: err})
}

// err is nil when every message was accepted; the one error when every
// message failed for the same reason (the queue is missing, SQS is down);
// otherwise a *broker.PublishError naming the failed messages.
func (r *results) err(total int) error {
	if len(r.failed) == 0 {
		return nil
	}
	if len(r.failed) == total {
		same := true
		for _, f := range r.failed {
			same = same && f.Err == r.first
		}
		if same {
			return r.first
		}
	}
	slices.SortFunc(r.failed, func(a, b broker.FailedMessage) int { return a.Index - b.Index })
	return &broker.PublishError{Topic: r.topic, Failed: r.failed}
}
