package middleware_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/middleware"
)

func TestRecover(t *testing.T) {
	h := middleware.Recover()(func(ctx context.Context, m *broker.Message) error {
		panic("boom")
	})
	err := h(context.Background(), &broker.Message{ID: "m1"})
	var pe *broker.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Recover returned %v (%T), want a *broker.PanicError", err, err)
	}
	if pe.Value != "boom" {
		t.Errorf("PanicError.Value = %v, want boom", pe.Value)
	}
	if len(pe.Stack) == 0 || !strings.Contains(string(pe.Stack), "TestRecover") {
		t.Errorf("PanicError.Stack does not show the panicking test function:\n%s", pe.Stack)
	}
	if broker.IsPermanent(err) {
		t.Error("a panic must be redelivered, but the error is permanent")
	}
}

func TestRecoverErrorValueUnwraps(t *testing.T) {
	sentinel := errors.New("nil map")
	err := middleware.Recover()(func(ctx context.Context, m *broker.Message) error {
		panic(sentinel)
	})(context.Background(), &broker.Message{})
	if !errors.Is(err, sentinel) {
		t.Errorf("Recover returned %v, want it to wrap the panic's error value", err)
	}
}

func TestRecoverPassesResults(t *testing.T) {
	fail := errors.New("fail")
	for _, want := range []error{nil, fail} {
		got := middleware.Recover()(func(ctx context.Context, m *broker.Message) error { return want })(context.Background(), &broker.Message{})
		if got != want {
			t.Errorf("Recover returned %v, want %v", got, want)
		}
	}
}

// On the in-memory broker a panicking handler under Recover gets its message
// back: the panic is a failed attempt, not a lost message.
func TestRecoverRedeliversOnMem(t *testing.T) {
	b, err := membroker.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := b.NewPublisher()
	defer pub.Close()
	sub, err := b.NewConsumer(&broker.ConsumerOptions{
		MaxAttempts: 3,
		Backoff:     broker.ConstantBackoff(time.Millisecond),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := pub.Publish(ctx, "panics", &broker.Message{ID: "m1"}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var attempts []int
	secondAttempt := make(chan struct{})
	h := middleware.Recover()(func(ctx context.Context, m *broker.Message) error {
		mu.Lock()
		attempts = append(attempts, m.Attempt)
		mu.Unlock()
		if m.Attempt == 1 {
			panic("first delivery crashes")
		}
		close(secondAttempt)
		return nil
	})
	consumed := make(chan error, 1)
	go func() { consumed <- sub.Consume(ctx, "panics", h) }()

	select {
	case <-secondAttempt:
	case <-time.After(10 * time.Second):
		t.Fatal("the message was not redelivered after the handler panicked")
	}
	cancel()
	<-consumed
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 2 || attempts[0] != 1 || attempts[1] != 2 {
		t.Errorf("handler saw attempts %v, want [1 2]", attempts)
	}
}
