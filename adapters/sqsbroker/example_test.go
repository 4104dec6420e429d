package sqsbroker_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
)

// Open a publisher from a URL; credentials come from the AWS default chain.
func Example_url() {
	ctx := context.Background()
	p, err := broker.OpenPublisher(ctx, "sqs://?region=eu-west-1&create_queues=true")
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	// "orders.fifo" is a FIFO queue: messages of one Key keep their order.
	err = p.Publish(ctx, "orders.fifo", &broker.Message{Key: "customer-7", Body: []byte(`{"order":42}`)})
	if err != nil {
		log.Fatal(err)
	}
}

// Build a Broker from your own AWS configuration.
func ExampleNew() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	b, err := sqsbroker.New(sqs.NewFromConfig(cfg), &sqsbroker.Options{CreateQueues: true})
	if err != nil {
		log.Fatal(err)
	}
	c, err := b.NewConsumer(&broker.ConsumerOptions{Concurrency: 8, MaxAttempts: 5})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Consume(ctx, "orders", func(ctx context.Context, m *broker.Message) error {
		fmt.Printf("order %s, attempt %d\n", m.Body, m.Attempt)
		return nil
	})
	if err != nil {
		log.Print(err)
	}
}

// Topic names map to SQS queue names.
func ExampleQueueName() {
	for _, topic := range []string{"orders", "orders.dlq", "orders.fifo", "orders.fifo.dlq", "billing.events"} {
		name, fifo, _ := sqsbroker.QueueName(topic)
		fmt.Println(topic, "->", name, fifo)
	}
	// Output:
	// orders -> orders false
	// orders.dlq -> orders-dlq false
	// orders.fifo -> orders.fifo true
	// orders.fifo.dlq -> orders-dlq.fifo true
	// billing.events -> billing-events false
}
