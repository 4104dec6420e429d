package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// Dedupe around a handler: the same message delivered three times sends one
// email, and every copy is acknowledged.
func ExampleDedupe() {
	store := idempotency.NewMemoryStore(nil)
	sendEmail := func(ctx context.Context, m *broker.Message) error {
		fmt.Printf("email for %s sent\n", m.ID)
		return nil
	}
	h := broker.Chain(sendEmail, idempotency.Dedupe(store, &idempotency.DedupeOptions{Namespace: "notifications"}))

	for range 3 {
		err := h(context.Background(), &broker.Message{ID: "order-42.confirmed"})
		fmt.Println("acknowledged:", err == nil)
	}
	// Output:
	// email for order-42.confirmed sent
	// acknowledged: true
	// acknowledged: true
	// acknowledged: true
}

// The Store protocol by hand: claim, see the claim held, complete, see Done.
func ExampleMemoryStore() {
	ctx := context.Background()
	store := idempotency.NewMemoryStore(&idempotency.MemoryOptions{MaxKeys: 10_000})

	mine, _ := store.Claim(ctx, "order-42", time.Minute)
	fmt.Println("worker A:", mine.State)
	other, _ := store.Claim(ctx, "order-42", time.Minute)
	fmt.Println("worker B:", other.State)

	// ... worker A sends the email, then:
	_ = store.Complete(ctx, mine, 24*time.Hour)
	later, _ := store.Claim(ctx, "order-42", time.Minute)
	fmt.Println("a redelivery:", later.State)

	err := store.Release(ctx, mine)
	fmt.Println("release after complete refused:", errors.Is(err, idempotency.ErrNotOwner))
	// Output:
	// worker A: Claimed
	// worker B: InProgress
	// a redelivery: Done
	// release after complete refused: true
}
