package brokertest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
)

// cleanupTimeout bounds the deletion of what one test left on a broker.
const cleanupTimeout = 30 * time.Second

// deleteRabbit deletes the groups' quorum queues of topics
// (rabbitbroker.QueueName), and the topics' exchanges.
// RabbitMQ deletes what does not exist without complaint.
func deleteRabbit(t testing.TB, uri string, topics, groups []string) {
	conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(cleanupTimeout)})
	if err != nil {
		t.Logf("brokertest: cleanup of %s on RabbitMQ: %v", topics[0], err)
		return
	}
	defer conn.Close()
	var ch *amqp.Channel
	// do runs del on an open channel: an error closes the channel it
	// happened on, and the next deletion opens another.
	do := func(what string, del func(*amqp.Channel) error) {
		if ch == nil || ch.IsClosed() {
			if ch, err = conn.Channel(); err != nil {
				t.Logf("brokertest: cleanup of %s on RabbitMQ: %v", what, err)
				return
			}
		}
		if err := del(ch); err != nil {
			t.Logf("brokertest: cleanup of %s on RabbitMQ: %v", what, err)
		}
	}
	for _, topic := range topics {
		for _, group := range groups {
			q := rabbitbroker.QueueName(topic, group)
			do("queue "+q, func(ch *amqp.Channel) error {
				_, err := ch.QueueDelete(q, false, false, false)
				return err
			})
		}
	}
	for _, x := range topics {
		do("exchange "+x, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) })
	}
}

// deleteKafka deletes the consumer groups the adapter makes of groups on
// topics (kafkabroker.GroupID), then topics. Kafka reports what does not exist
// per group and topic, which is not logged.
func deleteKafka(t testing.TB, brokers string, topics, groups []string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(strings.Split(brokers, ",")...), Transport: tr}
	var ids []string
	for _, topic := range topics {
		for _, group := range groups {
			ids = append(ids, kafkabroker.GroupID(group, topic))
		}
	}
	if _, err := c.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: ids}); err != nil {
		t.Logf("brokertest: cleanup of the consumer groups of %s on Kafka: %v", topics[0], err)
	}
	if _, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics}); err != nil {
		t.Logf("brokertest: cleanup of %s on Kafka: %v", topics[0], err)
	}
}

// deleteSQS deletes the queues of topics, named by sqsbroker.QueueName; an SQS
// queue is one group, so groups do not matter. A queue that does not exist is
// passed over.
func deleteSQS(t testing.TB, endpoint string, topics, _ []string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	c := newSQSClient(endpoint)
	for _, topic := range topics {
		name, _, err := sqsbroker.QueueName(topic)
		if err != nil {
			continue
		}
		out, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err != nil {
			continue
		}
		if _, err := c.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl}); err != nil {
			t.Logf("brokertest: cleanup of queue %s on SQS: %v", name, err)
		}
	}
}
