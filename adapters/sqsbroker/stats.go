package sqsbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
)

var countAttributes = []types.QueueAttributeName{
	types.QueueAttributeNameApproximateNumberOfMessages,
	types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
	types.QueueAttributeNameApproximateNumberOfMessagesDelayed,
}

// counts are a queue's approximate message counts.
type counts struct{ visible, notVisible, delayed int64 }

func (b *Broker) counts(ctx context.Context, q *queue) (counts, error) {
	out, err := b.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q.url), AttributeNames: countAttributes})
	if err != nil {
		err = wrap("read the counts of", q.topic, err)
		b.forget(q.topic, err)
		return counts{}, err
	}
	n := func(a types.QueueAttributeName) int64 {
		v, _ := strconv.ParseInt(out.Attributes[string(a)], 10, 64)
		return v
	}
	return counts{
		visible:    n(types.QueueAttributeNameApproximateNumberOfMessages),
		notVisible: n(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible),
		delayed:    n(types.QueueAttributeNameApproximateNumberOfMessagesDelayed),
	}, nil
}

// stats implements Stats with the given dead-letter topic.
func (b *Broker) stats(ctx context.Context, topic, group, deadLetterTopic string) (broker.Stats, error) {
	if group != "" && group != broker.DefaultGroup {
		return broker.Stats{}, fmt.Errorf("sqs: stats of %q for group %q: an SQS queue is a single group: %w", topic, group, broker.ErrUnsupported)
	}
	if err := broker.ValidateTopic(topic); err != nil {
		return broker.Stats{}, fmt.Errorf("sqs: stats: %w", err)
	}
	q, err := b.queue(ctx, topic, nil)
	if err != nil {
		return broker.Stats{}, err
	}
	c, err := b.counts(ctx, q)
	if err != nil {
		return broker.Stats{}, err
	}
	s := broker.Stats{
		Depth:       c.visible + c.delayed,
		InFlight:    c.notVisible,
		Lag:         c.visible + c.delayed,
		Consumers:   -1,
		DeadLetters: -1,
	}
	dq, err := b.queue(ctx, deadLetterTopic, nil)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return s, nil
	case err != nil:
		return broker.Stats{}, err
	}
	d, err := b.counts(ctx, dq)
	if err != nil {
		return broker.Stats{}, err
	}
	s.DeadLetters = d.visible + d.notVisible + d.delayed
	return s, nil
}
