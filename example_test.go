package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/brokerkit/broker"
	_ "github.com/brokerkit/broker/adapters/membroker" // registers mem://
)

// Open a publisher and a consumer from a URL: switching brokers is a change of
// configuration, not of code.
func ExampleOpenPublisher() {
	ctx := context.Background()
	url := broker.URLFromEnv("mem://example-open") // BROKER_URL wins when set

	pub, err := broker.OpenPublisher(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pub.Close()
	msg := &broker.Message{Key: "customer-42", Body: []byte(`{"order":1}`)}
	if err := pub.Publish(ctx, "orders", msg); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("published; ID assigned:", len(msg.ID) == 26)
	// Output: published; ID assigned: true
}

// An unknown scheme lists the registered ones; credentials are never echoed.
func ExampleOpenConsumer_errors() {
	_, err := broker.OpenConsumer(context.Background(), "nats://user:s3cret@localhost:4222")
	fmt.Println(errors.Is(err, broker.ErrInvalidArgument), strings.Contains(err.Error(), "s3cret"))

	_, err = broker.OpenConsumer(context.Background(), "mem://?concurency=8")
	fmt.Println(errors.Is(err, broker.ErrInvalidArgument), strings.Contains(err.Error(), "concurency"))
	// Output:
	// true false
	// true true
}

// Publish, then consume with a handler: nil acknowledges, an error redelivers.
func ExampleConsumer() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub, _ := broker.OpenPublisher(ctx, "mem://example-consume")
	defer pub.Close()
	sub, _ := broker.OpenConsumer(ctx, "mem://example-consume?max_attempts=3&backoff_min=1ms&backoff_max=5ms")
	defer sub.Close()

	_ = pub.Publish(ctx, "greetings", &broker.Message{ID: "m1", Body: []byte("hello")})

	done := make(chan struct{})
	go func() {
		_ = sub.Consume(ctx, "greetings", func(ctx context.Context, m *broker.Message) error {
			if m.Attempt == 1 {
				fmt.Printf("attempt %d of %s: failing\n", m.Attempt, m.ID)
				return errors.New("smtp timeout")
			}
			fmt.Printf("attempt %d of %s: %s\n", m.Attempt, m.ID, m.Body)
			close(done)
			return nil
		})
	}()
	<-done
	// Output:
	// attempt 1 of m1: failing
	// attempt 2 of m1: hello
}

// Chain composes middleware, the first being the outermost.
func ExampleChain() {
	trace := func(name string) broker.Middleware {
		return func(next broker.Handler) broker.Handler {
			return func(ctx context.Context, m *broker.Message) error {
				fmt.Println("enter", name)
				defer fmt.Println("leave", name)
				return next(ctx, m)
			}
		}
	}
	h := broker.Chain(func(ctx context.Context, m *broker.Message) error {
		fmt.Println("handle", string(m.Body))
		return nil
	}, trace("outer"), trace("inner"))
	_ = h(context.Background(), &broker.Message{Body: []byte("x")})
	// Output:
	// enter outer
	// enter inner
	// handle x
	// leave inner
	// leave outer
}

// Code gives what a URL cannot (a logger, a backoff, a dead-letter filter);
// the URL still has the last word on what it sets.
func ExampleOpenConsumerWith() {
	errOutage := errors.New("mail server down")
	base := broker.ConsumerOptions{
		Concurrency: 4,
		Backoff:     broker.ExponentialBackoff(time.Second, time.Minute),
		// An outage is nobody's message's fault: keep retrying those.
		DeadLetterIf: func(_ *broker.Message, err error) bool { return !errors.Is(err, errOutage) },
	}
	c, err := broker.OpenConsumerWith(context.Background(), "mem://example-with?concurrency=16&group=mailer", base)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	o := c.(interface{ Options() broker.ConsumerOptions }).Options()
	fmt.Println(o.Group, o.Concurrency, o.DeadLetterIf != nil)
	// Output: mailer 16 true
}

// Ask a consumer what its broker can do before relying on it.
func ExampleCapabilitiesOf() {
	c, err := broker.OpenConsumer(context.Background(), "mem://example-caps")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	caps, ok := broker.CapabilitiesOf(c)
	fmt.Println(ok, caps.FanOut, caps.OrderedByKey)
	// Output: true true true
}
