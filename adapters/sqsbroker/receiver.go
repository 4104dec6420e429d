package sqsbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// receiver is the driver.Receiver of one Consumer.
type receiver struct {
	b *Broker

	mu         sync.Mutex
	deadLetter map[string]string // topic -> its dead-letter topic, for Stats
}

var (
	_ driver.Receiver    = (*receiver)(nil)
	_ driver.StatsReader = (*receiver)(nil)
)

// Features declares OrderedByKey, which FIFO queues provide: Subscribe refuses
// OrderByKey on a standard queue. Nack hands a message back with
// ChangeMessageVisibility, so redelivery does not hold up other messages.
func (r *receiver) Features() driver.Features {
	return driver.Features{Capabilities: broker.Capabilities{OrderedByKey: true}, NackRedelivers: true}
}

func (r *receiver) Subscribe(ctx context.Context, topic string, cfg driver.SubscribeConfig) (driver.Subscription, error) {
	o := cfg.Options
	if o.Group != broker.DefaultGroup {
		return nil, fmt.Errorf("sqs: consumer group %q: an SQS queue is a single group: %w", o.Group, broker.ErrUnsupported)
	}
	dlt := o.DeadLetterTopicFor(topic)
	q, err := r.b.queue(ctx, topic, r.b.specFor(topic, dlt, o.MaxAttempts))
	if err != nil {
		return nil, err
	}
	if o.OrderByKey && !q.fifo {
		return nil, fmt.Errorf("sqs: topic %q: OrderByKey needs a FIFO queue (a topic ending in %q); a standard queue does not keep order: %w",
			topic, fifoSuffix, broker.ErrUnsupported)
	}
	r.checkRedrive(ctx, q, o)
	r.mu.Lock()
	if r.deadLetter == nil {
		r.deadLetter = map[string]string{}
	}
	r.deadLetter[topic] = dlt
	r.mu.Unlock()
	return newSubscription(r.b, q, cfg), nil
}

// checkRedrive warns when the queue's RedrivePolicy would move messages to
// the dead-letter queue before the consumer has used its attempts: SQS would
// then park them without the reason and attempt headers. It is advice only:
// a failure to read the policy is logged, and receiving reports real problems.
func (r *receiver) checkRedrive(ctx context.Context, q *queue, o broker.ConsumerOptions) {
	out, err := r.b.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(q.url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameRedrivePolicy}})
	if err != nil {
		if ctx.Err() == nil {
			o.Logger.Warn("sqs: cannot read the queue's RedrivePolicy", "topic", q.topic, "error", wrap("read the attributes of", q.topic, err))
		}
		return
	}
	raw := out.Attributes[string(types.QueueAttributeNameRedrivePolicy)]
	if raw == "" {
		return
	}
	var p redrivePolicy
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		o.Logger.Warn("sqs: cannot read the queue's RedrivePolicy", "topic", q.topic, "policy", raw, "error", err)
		return
	}
	if p.MaxReceiveCount <= o.MaxAttempts {
		o.Logger.Warn("sqs: the queue's RedrivePolicy maxReceiveCount is not above MaxAttempts: SQS will dead-letter "+
			"messages itself, without reason headers, before the consumer does; raise maxReceiveCount",
			"topic", q.topic, "max_receive_count", p.MaxReceiveCount, "max_attempts", o.MaxAttempts)
	}
}

func (r *receiver) Close() error { return nil }

// Stats is Broker.Stats, with the consumer's dead-letter topic.
func (r *receiver) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	r.mu.Lock()
	dlt := r.deadLetter[topic]
	r.mu.Unlock()
	if dlt == "" {
		dlt = broker.DeadLetterTopic(topic)
	}
	return r.b.stats(ctx, topic, group, dlt)
}
