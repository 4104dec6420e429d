package sqsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
)

// api is the part of *sqs.Client the adapter uses; tests substitute fakes.
type api interface {
	GetQueueUrl(context.Context, *sqs.GetQueueUrlInput, ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	CreateQueue(context.Context, *sqs.CreateQueueInput, ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error)
	GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibility(context.Context, *sqs.ChangeMessageVisibilityInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
}

var _ api = (*sqs.Client)(nil)

// queue is a resolved topic.
type queue struct {
	topic string
	name  string
	url   string
	fifo  bool
}

// createSpec says how to create a missing queue when Options.CreateQueues is
// set; a nil spec never creates.
type createSpec struct {
	// deadLetterTopic gets a RedrivePolicy from the new queue; empty for a
	// queue that is itself a dead-letter queue.
	deadLetterTopic string
	maxReceiveCount int
	// force creates the queue even without Options.CreateQueues.
	force bool
}

// dlqRetention is the MessageRetentionPeriod of the dead-letter queues the
// adapter creates: the SQS maximum, 14 days, so parked messages last.
const dlqRetention = "1209600"

// receiveLimit is the maxReceiveCount for a queue created by a user with
// maxAttempts (0 when unknown, as for a publisher).
func (b *Broker) receiveLimit(maxAttempts int) int {
	if b.opts.MaxReceiveCount > 0 {
		return b.opts.MaxReceiveCount
	}
	return max(20, 2*maxAttempts)
}

// specFor is the creation spec for topic used with the given MaxAttempts.
func (b *Broker) specFor(topic, deadLetterTopic string, maxAttempts int) *createSpec {
	if broker.IsDeadLetterTopic(topic) {
		return &createSpec{}
	}
	return &createSpec{deadLetterTopic: deadLetterTopic, maxReceiveCount: b.receiveLimit(maxAttempts)}
}

// queue returns topic's queue, looking its URL up once (and creating the
// queue per spec when Options.CreateQueues is set).
func (b *Broker) queue(ctx context.Context, topic string, spec *createSpec) (*queue, error) {
	b.mu.Lock()
	q := b.queues[topic]
	b.mu.Unlock()
	if q != nil {
		return q, nil
	}
	qname, fifo, err := QueueName(topic)
	if err != nil {
		return nil, err
	}
	var url string
	if isQueueURL(topic) {
		url = queueURLFor(topic, qname)
	} else {
		out, err := b.api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(qname)})
		switch {
		case err == nil:
			url = aws.ToString(out.QueueUrl)
		case classify(err) == broker.ErrNotFound && spec != nil && (b.opts.CreateQueues || spec.force):
			if url, err = b.create(ctx, topic, qname, fifo, spec); err != nil {
				return nil, err
			}
		case classify(err) == broker.ErrNotFound:
			return nil, fmt.Errorf("sqs: topic %q: queue %q does not exist (create it, or set create_queues=true): %w: %w",
				topic, qname, broker.ErrNotFound, err)
		default:
			return nil, wrap("look up queue for", topic, err)
		}
	}
	q = &queue{topic: topic, name: qname, url: url, fifo: fifo}
	b.mu.Lock()
	b.queues[topic] = q
	b.mu.Unlock()
	return q, nil
}

// forget drops a cached queue URL after SQS said the queue does not exist,
// so that the next use looks it up (or creates it) again.
func (b *Broker) forget(topic string, err error) {
	if errors.Is(err, broker.ErrNotFound) {
		b.mu.Lock()
		delete(b.queues, topic)
		b.mu.Unlock()
	}
}

// CreateQueue creates topic's queue if it does not exist, whatever
// Options.CreateQueues says: first its dead-letter queue (deadLetterTopic,
// empty meaning "<topic>.dlq"), then the queue with a RedrivePolicy to it. A
// topic that is itself a dead-letter topic ("....dlq") gets no dead-letter
// queue of its own. Existing queues are left as they are.
func (b *Broker) CreateQueue(ctx context.Context, topic, deadLetterTopic string) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return fmt.Errorf("sqs: create queue: %w", err)
	}
	if deadLetterTopic == "" {
		deadLetterTopic = broker.DeadLetterTopic(topic)
	}
	qname, fifo, err := QueueName(topic)
	if err != nil {
		return err
	}
	spec := b.specFor(topic, deadLetterTopic, 0)
	spec.force = true
	url, err := b.create(ctx, topic, qname, fifo, spec)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.queues[topic] = &queue{topic: topic, name: qname, url: url, fifo: fifo}
	b.mu.Unlock()
	return nil
}

func (b *Broker) create(ctx context.Context, topic, qname string, fifo bool, spec *createSpec) (string, error) {
	attrs := map[string]string{
		string(types.QueueAttributeNameVisibilityTimeout): strconv.Itoa(int(b.opts.VisibilityTimeout.Seconds())),
	}
	if fifo {
		attrs[string(types.QueueAttributeNameFifoQueue)] = "true"
		attrs[string(types.QueueAttributeNameContentBasedDeduplication)] = "false"
	}
	if b.opts.MaxMessageSize != DefaultMessageLimit {
		attrs[string(types.QueueAttributeNameMaximumMessageSize)] = strconv.Itoa(b.opts.MaxMessageSize)
	}
	if spec.deadLetterTopic == "" {
		attrs[string(types.QueueAttributeNameMessageRetentionPeriod)] = dlqRetention
	} else {
		dq, err := b.queue(ctx, spec.deadLetterTopic, &createSpec{force: spec.force})
		if err == nil && dq.fifo != fifo {
			err = fmt.Errorf("sqs: topic %q: dead-letter topic %q must be FIFO exactly when the topic is: %w",
				topic, spec.deadLetterTopic, broker.ErrInvalidArgument)
		}
		if err != nil {
			return "", err
		}
		out, err := b.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
			QueueUrl: aws.String(dq.url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
		if err != nil {
			return "", wrap("read the ARN of", spec.deadLetterTopic, err)
		}
		policy, _ := json.Marshal(redrivePolicy{
			DeadLetterTargetArn: out.Attributes[string(types.QueueAttributeNameQueueArn)],
			MaxReceiveCount:     spec.maxReceiveCount,
		})
		attrs[string(types.QueueAttributeNameRedrivePolicy)] = string(policy)
	}
	out, err := b.api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(qname), Attributes: attrs})
	if err != nil {
		var exists *types.QueueNameExists
		if !errors.As(err, &exists) {
			return "", wrap("create queue for", topic, err)
		}
		// Created meanwhile with other attributes: use it as it is.
		got, gerr := b.api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(qname)})
		if gerr != nil {
			return "", wrap("look up queue for", topic, gerr)
		}
		return aws.ToString(got.QueueUrl), nil
	}
	return aws.ToString(out.QueueUrl), nil
}

// redrivePolicy is the JSON of the RedrivePolicy queue attribute.
type redrivePolicy struct {
	DeadLetterTargetArn string `json:"deadLetterTargetArn"`
	MaxReceiveCount     int    `json:"maxReceiveCount"`
}

// UnmarshalJSON accepts maxReceiveCount as a number or a string: SQS returns
// it as either.
func (p *redrivePolicy) UnmarshalJSON(b []byte) error {
	var raw struct {
		DeadLetterTargetArn string          `json:"deadLetterTargetArn"`
		MaxReceiveCount     json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	p.DeadLetterTargetArn = raw.DeadLetterTargetArn
	s := string(raw.MaxReceiveCount)
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("maxReceiveCount %s: %w", raw.MaxReceiveCount, err)
	}
	p.MaxReceiveCount = n
	return nil
}
