package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/middleware"
)

// Compose middleware with broker.Chain, the first being the outermost, and
// consume with it on the in-memory broker. Retry absorbs a flaky step in
// process, so the broker sees one delivery that succeeded.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, _ := membroker.New(nil)
	pub := b.NewPublisher()
	defer pub.Close()
	sub, _ := b.NewConsumer(&broker.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer sub.Close()

	calls := 0
	sent := make(chan struct{})
	sendEmail := func(ctx context.Context, m *broker.Message) error {
		calls++
		if calls < 3 {
			fmt.Printf("delivery %d, call %d: smtp 421, try again later\n", m.Attempt, calls)
			return errors.New("smtp 421")
		}
		fmt.Printf("delivery %d, call %d: sent %s\n", m.Attempt, calls, m.Body)
		close(sent)
		return nil
	}
	h := broker.Chain(sendEmail,
		middleware.Recover(),            // outermost: a panic below becomes an error
		middleware.Timeout(time.Minute), // bounds all attempts and waits
		middleware.Retry(middleware.RetryOptions{MaxAttempts: 3, Backoff: broker.ConstantBackoff(time.Millisecond)}),
	)

	_ = pub.Publish(ctx, "emails", &broker.Message{ID: "m1", Body: []byte("welcome")})
	go func() { _ = sub.Consume(ctx, "emails", h) }()
	<-sent
	// Output:
	// delivery 1, call 1: smtp 421, try again later
	// delivery 1, call 2: smtp 421, try again later
	// delivery 1, call 3: sent welcome
}

// A handler that outlives its timeout gets an error naming the message and
// the timeout; the consumer redelivers the message.
func ExampleTimeout() {
	h := middleware.Timeout(10 * time.Millisecond)(func(ctx context.Context, m *broker.Message) error {
		<-ctx.Done() // a slow SMTP server
		return ctx.Err()
	})
	err := h(context.Background(), &broker.Message{ID: "order-42"})
	fmt.Println(err)
	fmt.Println(errors.Is(err, context.DeadlineExceeded), broker.IsPermanent(err))
	// Output:
	// middleware: handler for message order-42 exceeded its 10ms timeout: context deadline exceeded
	// true false
}

// A panic becomes a *broker.PanicError carrying the stack.
func ExampleRecover() {
	h := middleware.Recover()(func(ctx context.Context, m *broker.Message) error {
		var customers map[string]int
		customers["c-1"]++ // assignment to entry in nil map
		return nil
	})
	err := h(context.Background(), &broker.Message{ID: "m1"})
	var pe *broker.PanicError
	fmt.Println(errors.As(err, &pe), pe.Value, len(pe.Stack) > 0)
	// Output: true assignment to entry in nil map true
}
