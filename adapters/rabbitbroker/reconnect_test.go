package rabbitbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/driver"
	"github.com/brokerkit/broker/internal/testenv"
)

// dropConnection closes c's current connection from the client side, as a
// network failure would, without touching the broker other tests share.
func dropConnection(t *testing.T, c *connector) {
	t.Helper()
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		t.Fatal("no connection to drop")
	}
	_ = conn.Close()
}

// TestReconnectAfterConnectionLoss drops the publisher's and the consumer's
// connections while messages flow; both come back without help and nothing
// is lost. (The broker restart itself is TestReliabilityBrokerRestart.)
func TestReconnectAfterConnectionLoss(t *testing.T) {
	uri := testenv.AMQPURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, _ := (*Options)(nil).withDefaults()
	shown, err := checkURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	s := newSender(newConnector(uri, shown, amqp.Config{}, "test publisher"), o)
	p := driver.NewPublisher(name, s)
	defer p.Close()
	co := broker.ConsumerOptions{Concurrency: 4, Backoff: broker.ConstantBackoff(10 * time.Millisecond)}.WithDefaults()
	r := newReceiver(newConnector(uri, shown, amqp.Config{}, "test consumer"), o, co)
	c, err := driver.NewConsumer(name, r, newSender(newConnector(uri, shown, amqp.Config{}, "test dlq"), o), co)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	topic := conformance.RandomName("rmq-reconnect")
	deleteTopicAfter(t, uri, topic)
	var mu sync.Mutex
	seen := map[string]bool{}
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_ = c.Consume(cctx, topic, func(ctx context.Context, m *broker.Message) error {
			mu.Lock()
			seen[m.ID] = true
			mu.Unlock()
			return nil
		})
	}()

	const total = 300
	var failures int
	for i := range total {
		if i == 100 {
			dropConnection(t, s.c)
		}
		if i == 200 {
			dropConnection(t, r.c)
		}
		m := &broker.Message{ID: fmt.Sprintf("r-%03d", i), Body: []byte("x")}
		for {
			err := p.Publish(ctx, topic, m)
			if err == nil {
				break
			}
			if !errors.Is(err, broker.ErrUnavailable) {
				t.Fatalf("Publish after a dropped connection = %v, want nil or a retryable ErrUnavailable", err)
			}
			failures++
			time.Sleep(20 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages handled after the reconnects", n, total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d publish attempts failed with ErrUnavailable across the drop and were retried", failures)
}
