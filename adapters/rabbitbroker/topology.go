package rabbitbroker

import (
	"errors"
	"fmt"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
)

const (
	// deadLetterDeliveryLimit is the x-delivery-limit of dead-letter queues:
	// effectively unlimited on every RabbitMQ version. It cannot be left out (4.x
	// then applies 20 and drops what passes it) nor be -1 (3.x reads that as "drop
	// on the first return", checked on 3.10).
	deadLetterDeliveryLimit = 1_000_000
	// lockSuffix names the exclusive queue an ordered consumer holds as a lock.
	lockSuffix = ".order-lock"
	// argDeliveryLimit is the quorum queue argument that bounds redeliveries.
	argDeliveryLimit = "x-delivery-limit"
	// maxName is the longest exchange or queue name AMQP allows, in bytes.
	maxName = 255
)

// QueueName is the name of the quorum queue that holds group's messages of
// topic, for tools that inspect or remove it.
func QueueName(topic, group string) string { return topic + "." + group }

// topology declares the exchanges, queues and bindings of topics. Every
// declaration of one queue must use the same arguments, or RabbitMQ refuses it
// (406), so the arguments depend only on the topic and the delivery limit.
type topology struct {
	deliveryLimit int
}

// checkNames reports topic or group names RabbitMQ cannot take, before any
// network call.
func checkNames(topic, group string) error {
	if strings.HasPrefix(topic, "amq.") {
		return fmt.Errorf("amqp: topic %q: names starting with \"amq.\" are reserved by RabbitMQ: %w", topic, broker.ErrInvalidArgument)
	}
	longest := QueueName(topic, group) + lockSuffix
	if !broker.IsDeadLetterTopic(topic) {
		longest = max(longest, QueueName(broker.DeadLetterTopic(topic), broker.DefaultGroup))
	}
	if len(longest) > maxName {
		return fmt.Errorf("amqp: topic %q and group %q make the queue name %q, over AMQP's %d bytes: %w",
			topic, group, longest, maxName, broker.ErrInvalidArgument)
	}
	return nil
}

// queueArgs are the arguments of every queue of topic.
func (t topology) queueArgs(topic string) amqp.Table {
	if broker.IsDeadLetterTopic(topic) {
		return amqp.Table{
			amqp.QueueTypeArg: amqp.QueueTypeQuorum,
			argDeliveryLimit:  int32(deadLetterDeliveryLimit),
		}
	}
	return amqp.Table{
		amqp.QueueTypeArg:        amqp.QueueTypeQuorum,
		argDeliveryLimit:         int32(t.deliveryLimit),
		"x-dead-letter-exchange": broker.DeadLetterTopic(topic),
		// At-least-once dead-lettering: the broker keeps a message until the
		// dead-letter queue confirmed it. It requires the reject-publish overflow.
		"x-dead-letter-strategy": "at-least-once",
		amqp.QueueOverflowArg:    amqp.QueueOverflowRejectPublish,
	}
}

// declare declares on ch the durable topic exchange of topic, the quorum queue
// of group bound to it with "#", and, unless topic is itself a dead-letter
// topic, the exchange "<topic>.dlq" with its default group's queue, so that
// messages the broker dead-letters have somewhere to go. A failed declaration
// closes ch.
func (t topology) declare(ch *amqp.Channel, topic, group string) error {
	if !broker.IsDeadLetterTopic(topic) {
		if err := t.declareOne(ch, broker.DeadLetterTopic(topic), broker.DefaultGroup); err != nil {
			return err
		}
	}
	return t.declareOne(ch, topic, group)
}

func (t topology) declareOne(ch *amqp.Channel, topic, group string) error {
	if err := ch.ExchangeDeclare(topic, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return mismatch("exchange", topic, err)
	}
	q := QueueName(topic, group)
	if _, err := ch.QueueDeclare(q, true, false, false, false, t.queueArgs(topic)); err != nil {
		return mismatch("queue", q, err)
	}
	if err := ch.QueueBind(q, "#", topic, false, nil); err != nil {
		return wrap(fmt.Sprintf("bind queue %q to exchange %q", q, topic), err)
	}
	return nil
}

// mismatch explains a refused declaration: PRECONDITION_FAILED means the
// exchange or queue exists with other properties.
func mismatch(kind, name string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		return fmt.Errorf("amqp: %s %q exists with other arguments than this adapter declares "+
			"(a different delivery_limit, or not created by brokerkit); use the same delivery_limit "+
			"on every URL of the topic, or delete the %s: %w: %w", kind, name, kind, broker.ErrInvalidArgument, err)
	}
	return wrap(fmt.Sprintf("declare %s %q", kind, name), err)
}
