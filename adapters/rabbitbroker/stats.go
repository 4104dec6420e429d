package rabbitbroker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
)

// queueStats reads the ready count and consumer count of group's queue on
// topic, and the ready count of the dead-letter topic's default queue, with
// passive declarations. AMQP does not report unacknowledged messages, so
// InFlight is -1 here; the receiver fills in what it holds itself.
func queueStats(ctx context.Context, c *connector, topic, group, deadLetterTopic string) (broker.Stats, error) {
	if err := broker.ValidateTopic(topic); err != nil {
		return broker.Stats{}, fmt.Errorf("amqp: stats: %w", err)
	}
	if group == "" {
		group = broker.DefaultGroup
	}
	conn, err := c.get(ctx)
	if err != nil {
		return broker.Stats{}, err
	}
	q, err := bounded(ctx, func() (amqp.Queue, error) { return inspect(conn, QueueName(topic, group)) }, nil)
	if err != nil {
		return broker.Stats{}, err
	}
	st := broker.Stats{
		Depth:     int64(q.Messages),
		Lag:       int64(q.Messages),
		InFlight:  -1,
		Consumers: int64(q.Consumers),
	}
	dq, err := bounded(ctx, func() (amqp.Queue, error) {
		return inspect(conn, QueueName(deadLetterTopic, broker.DefaultGroup))
	}, nil)
	switch {
	case err == nil:
		st.DeadLetters = int64(dq.Messages)
	case errors.Is(err, broker.ErrNotFound): // nothing was dead-lettered yet
	default:
		return broker.Stats{}, err
	}
	return st, nil
}

// inspect passively declares a queue on a channel of its own, as a missing
// queue closes the channel.
func inspect(conn *amqp.Connection, queue string) (amqp.Queue, error) {
	ch, err := conn.Channel()
	if err != nil {
		return amqp.Queue{}, unavailable("open a channel", err)
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return amqp.Queue{}, wrap(fmt.Sprintf("stats of queue %q", queue), err)
	}
	return q, nil
}

// Stats implements broker.StatsReader for the publisher. InFlight is -1: only
// a consumer knows what it holds.
func (s *sender) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	return queueStats(ctx, s.c, topic, group, broker.DeadLetterTopic(topic))
}

// Stats reports the group queue's ready count and consumers from a passive
// declaration, and the deliveries this consumer holds unsettled.
func (r *receiver) Stats(ctx context.Context, topic, group string) (broker.Stats, error) {
	if group == "" {
		group = r.co.Group
	}
	st, err := queueStats(ctx, r.c, topic, group, r.co.DeadLetterTopicFor(topic))
	if err != nil {
		return st, err
	}
	r.mu.Lock()
	if n := r.inFlight[QueueName(topic, group)]; n != nil {
		st.InFlight = max(n.Load(), 0)
	} else {
		st.InFlight = 0
	}
	r.mu.Unlock()
	return st, nil
}
