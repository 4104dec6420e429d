package compare

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/dlq"
)

// The same consumer written with each library, for the ergonomics table in
// README.md: RabbitMQ, durable quorum queue, 8 handlers at once, up to 5
// attempts with exponential backoff from 100 ms to 10 s, then the message
// goes to "<topic>.dlq" with the reason. TestErgonomics runs both against
// the real broker. The lines between the BEGIN and END markers are the ones
// counted.

// BEGIN brokerkit
func brokerkitConsumer(ctx context.Context, amqpURL, topic string, handle func(context.Context, []byte) error) error {
	c, err := broker.OpenConsumer(ctx, amqpURL+"?group=default&concurrency=8&max_attempts=5&backoff_min=100ms&backoff_max=10s")
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Consume(ctx, topic, func(ctx context.Context, m *broker.Message) error {
		return handle(ctx, m.Body)
	})
}

// END brokerkit

// BEGIN watermill
func watermillConsumer(ctx context.Context, amqpURL, topic string, handle func(context.Context, []byte) error) error {
	cfg := wamqp.NewDurableQueueConfig(amqpURL)
	cfg.Queue.Arguments = amqp.Table{"x-queue-type": "quorum"}
	cfg.Publish.ConfirmDelivery = true
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		return err
	}
	defer sub.Close()
	// The publisher declares no queue: without this the poison messages are dropped.
	if err := sub.SubscribeInitialize(topic + ".dlq"); err != nil {
		return err
	}
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		return err
	}
	defer pub.Close()
	poison, err := middleware.PoisonQueue(pub, topic+".dlq")
	if err != nil {
		return err
	}
	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	r.AddMiddleware(poison, middleware.Retry{
		MaxRetries: 4, InitialInterval: 100 * time.Millisecond, MaxInterval: 10 * time.Second, Multiplier: 2,
	}.Middleware)
	// One message at a time per subscription: 8 handlers are 8 subscriptions.
	for i := range 8 {
		r.AddConsumerHandler("notify-"+strconv.Itoa(i), topic, sub, func(m *message.Message) error {
			return handle(m.Context(), m.Payload)
		})
	}
	return r.Run(ctx)
}

// END watermill

// get takes one message from queue, if there is one. A queue that does not
// exist (yet) is an *amqp.Error with code amqp.NotFound.
func (r *rabbit) get(queue string) (amqp.Delivery, bool, error) {
	ch, err := r.conn.Channel()
	if err != nil {
		return amqp.Delivery{}, false, err
	}
	defer ch.Close()
	return ch.Get(queue, true)
}

// ergonomicsHandler fails "flaky" twice and "poison" always.
type ergonomicsHandler struct {
	mu    sync.Mutex
	calls map[string]int
}

func (h *ergonomicsHandler) handle(_ context.Context, body []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls[string(body)]++
	switch {
	case string(body) == "poison":
		return errors.New("cannot parse order")
	case string(body) == "flaky" && h.calls["flaky"] < 3:
		return errors.New("downstream busy")
	}
	return nil
}

func (h *ergonomicsHandler) count(body string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[body]
}

// TestErgonomics runs both consumers against RabbitMQ: "ok" is handled once,
// "flaky" three times, "poison" five times and then found in the
// dead-letter queue with its reason.
func TestErgonomics(t *testing.T) {
	r := rabbitSetup(t)
	for _, tc := range []struct {
		name    string
		consume func(ctx context.Context, amqpURL, topic string, handle func(context.Context, []byte) error) error
		publish func(t *testing.T, topic string, bodies ...string)
		queues  func(topic string) []string
		reason  func(d amqp.Delivery) string
	}{{
		name:    "brokerkit",
		consume: brokerkitConsumer,
		publish: func(t *testing.T, topic string, bodies ...string) {
			p, err := broker.OpenPublisher(context.Background(), r.uri)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for _, s := range bodies {
				if err := p.Publish(context.Background(), topic, &broker.Message{Body: []byte(s)}); err != nil {
					t.Fatal(err)
				}
			}
		},
		queues: func(topic string) []string {
			return []string{rabbitbroker.QueueName(topic, broker.DefaultGroup), rabbitbroker.QueueName(broker.DeadLetterTopic(topic), broker.DefaultGroup)}
		},
		reason: func(d amqp.Delivery) string { s, _ := d.Headers[dlq.HeaderReason].(string); return s },
	}, {
		name:    "watermill",
		consume: watermillConsumer,
		publish: func(t *testing.T, topic string, bodies ...string) {
			cfg := wamqp.NewDurableQueueConfig(r.uri)
			cfg.Queue.Arguments = amqp.Table{"x-queue-type": "quorum"}
			sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if err := sub.SubscribeInitialize(topic); err != nil {
				t.Fatal(err)
			}
			pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			for _, s := range bodies {
				if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(s))); err != nil {
					t.Fatal(err)
				}
			}
		},
		queues: func(topic string) []string { return []string{topic, topic + ".dlq"} },
		reason: func(d amqp.Delivery) string { s, _ := d.Headers[middleware.ReasonForPoisonedKey].(string); return s },
	}} {
		t.Run(tc.name, func(t *testing.T) {
			topic := randomName("cmp-ergo-" + tc.name)
			queues := tc.queues(topic)
			exchanges := []string{}
			if tc.name == "brokerkit" {
				exchanges = []string{topic, topic + ".dlq"}
			}
			r.deleteAfter(t, queues, exchanges)
			tc.publish(t, topic, "ok", "flaky", "poison")
			h := &ergonomicsHandler{calls: map[string]int{}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- tc.consume(ctx, r.uri, topic, h.handle) }()
			defer func() {
				cancel()
				if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("consumer: %v", err)
				}
			}()
			deadline := time.Now().Add(30 * time.Second)
			var dead amqp.Delivery
			for {
				d, ok, err := r.get(queues[1])
				var ae *amqp.Error
				if err != nil && !(errors.As(err, &ae) && ae.Code == amqp.NotFound) {
					t.Fatal(err)
				}
				if ok {
					dead = d
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("nothing in %s after 30s; calls: ok %d, flaky %d, poison %d", queues[1], h.count("ok"), h.count("flaky"), h.count("poison"))
				}
				time.Sleep(20 * time.Millisecond)
			}
			got := fmt.Sprintf("dead letter %q, reason %q; calls: ok %d, flaky %d, poison %d",
				dead.Body, tc.reason(dead), h.count("ok"), h.count("flaky"), h.count("poison"))
			want := `dead letter "poison", reason "cannot parse order"; calls: ok 1, flaky 3, poison 5`
			if got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}
