package rabbitbroker

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// Exported for the external tests.
var (
	DeleteTopicAfter = deleteTopicAfter
	DeleteQueueAfter = deleteQueueAfter
)

// deleteTopicAfter deletes, when the test ends, the exchanges and default
// queues that publishing to topic creates. Tests must not leave quorum queues
// behind: each holds file handles on the shared broker, and a node started
// with the default limit of 1024 stops accepting connections after about 300.
func deleteTopicAfter(t *testing.T, uri, topic string) {
	deleteAfter(t, uri, []string{QueueName(topic, broker.DefaultGroup), QueueName(broker.DeadLetterTopic(topic), broker.DefaultGroup)},
		[]string{topic, broker.DeadLetterTopic(topic)})
}

// deleteQueueAfter deletes a group's queue when the test ends.
func deleteQueueAfter(t *testing.T, uri, topic, group string) {
	deleteAfter(t, uri, []string{QueueName(topic, group)}, nil)
}

// deleteAfter deletes queues and exchanges when the test ends, giving up
// after a few seconds.
func deleteAfter(t *testing.T, uri string, queues, exchanges []string) {
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
			if err != nil {
				return
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				return
			}
			for _, q := range queues {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			for _, x := range exchanges {
				_ = ch.ExchangeDelete(x, false, false)
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	})
}

// TidyConsumer is a Consumer that deletes the group queue of every topic it
// consumed when the test ends.
type TidyConsumer struct {
	*driver.Consumer
	t   *testing.T
	uri string
}

// Tidy wraps c.
func Tidy(t *testing.T, uri string, c *driver.Consumer) TidyConsumer {
	return TidyConsumer{Consumer: c, t: t, uri: uri}
}

// Consume registers the queue for deletion, then consumes.
func (c TidyConsumer) Consume(ctx context.Context, topic string, h broker.Handler) error {
	if broker.ValidateTopic(topic) == nil {
		deleteQueueAfter(c.t, c.uri, topic, c.Options().Group)
	}
	return c.Consumer.Consume(ctx, topic, h)
}
