package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/brokerkit/broker"
	"github.com/segmentio/kafka-go"
)

// span is a partition's offset range: the oldest retained offset and the
// offset the next message will get.
type span struct{ first, end int64 }

// spans lists the offset range of every partition of topic.
func (a *admin) spans(ctx context.Context, topic string) (map[int]span, error) {
	parts, err := a.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range parts {
		req.Topics[topic] = append(req.Topics[topic], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	res, err := a.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("list offsets of %q", topic), err)
	}
	out := make(map[int]span, len(parts))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, wrap(ctx, fmt.Sprintf("list offsets of %q partition %d", topic, po.Partition), po.Error)
		}
		out[po.Partition] = span{first: po.FirstOffset, end: po.LastOffset}
	}
	if len(out) != len(parts) {
		return nil, fmt.Errorf("kafka: list offsets of %q: %d of %d partitions answered: %w", topic, len(out), len(parts), broker.ErrUnavailable)
	}
	return out, nil
}

// stats computes broker.Stats for the Kafka group gid on topic: Lag and Depth
// are the sum over partitions of the end offset minus the committed offset
// (or minus where the group would start, when it never committed);
// DeadLetters is the same figure for the default group of dead, the group
// that package dlq reads with, so that messages peeked at and put back or
// redriven no longer count; Consumers is the group's member count.
func (a *admin) stats(ctx context.Context, topic, gid, dead string, inFlight int64) (broker.Stats, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, adminTimeout)
		defer cancel()
	}
	if err := validateTopic(topic); err != nil {
		return broker.Stats{}, err
	}
	lag, parts, err := a.lag(ctx, topic, gid)
	if err != nil {
		return broker.Stats{}, err
	}
	st := broker.Stats{Depth: lag, Lag: lag, InFlight: inFlight, Consumers: -1, DeadLetters: -1, Partitions: parts}
	switch n, _, err := a.lag(ctx, dead, groupID(broker.DefaultGroup, dead, a.opts.GroupIDVerbatim)); {
	case err == nil:
		st.DeadLetters = n
	case errors.Is(err, broker.ErrNotFound):
		st.DeadLetters = 0
	}
	if g, err := a.client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{gid}}); err == nil &&
		len(g.Groups) == 1 && g.Groups[0].Error == nil {
		st.Consumers = int64(len(g.Groups[0].Members))
	}
	return st, nil
}

// lag is how many records of topic the group gid has yet to commit, summed
// over partitions, and per partition in partition order.
func (a *admin) lag(ctx context.Context, topic, gid string) (int64, []broker.PartitionLag, error) {
	spans, err := a.spans(ctx, topic)
	if err != nil {
		return 0, nil, err
	}
	req := &kafka.OffsetFetchRequest{GroupID: gid, Topics: map[string][]int{}}
	for p := range spans {
		req.Topics[topic] = append(req.Topics[topic], p)
	}
	res, err := a.client.OffsetFetch(ctx, req)
	if err == nil {
		err = res.Error
	}
	if err != nil {
		return 0, nil, wrap(ctx, fmt.Sprintf("fetch offsets of group %q", gid), err)
	}
	committed := map[int]int64{}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return 0, nil, wrap(ctx, fmt.Sprintf("fetch offsets of group %q partition %d", gid, p.Partition), p.Error)
		}
		committed[p.Partition] = p.CommittedOffset
	}
	var total int64
	parts := make([]broker.PartitionLag, 0, len(spans))
	for p, sp := range spans {
		pos, ok := committed[p]
		if !ok || pos < 0 {
			pos = sp.first
			if a.opts.InitialOffset == Latest {
				pos = sp.end
			}
		}
		pos = max(pos, sp.first) // retention removed what it had not read
		lag := max(0, sp.end-pos)
		parts = append(parts, broker.PartitionLag{Partition: p, Committed: pos, End: sp.end, Lag: lag})
		total += lag
	}
	slices.SortFunc(parts, func(x, y broker.PartitionLag) int { return x.Partition - y.Partition })
	return total, parts, nil
}
