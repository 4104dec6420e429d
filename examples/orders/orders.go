package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/brokerkit/broker"
)

// Header keys the order service sets on its events.
const (
	headerContentType = "content-type"
	headerEventType   = "event-type"
)

// OrderConfirmed is the event the order service publishes once an order is
// confirmed; the notification service emails the customer about it.
type OrderConfirmed struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Email      string `json:"email"`
	TotalCents int64  `json:"total_cents"`
}

// order is one order of the simulated workload.
type order struct {
	OrderConfirmed
	poison    int // 0: a good order; 1..3: which kind of invalid payload it carries
	publishes int // 1, or 2 when the producer retries its publish
	body      []byte
}

// eventID is the order's event ID: the same on every publish of the event, so
// that Dedupe recognises a second publish and a redelivery alike.
func eventID(orderID string) string { return orderID + eventSuffix }

const eventSuffix = ".confirmed"

// workload returns cfg.Orders orders from cfg.Seed: customers, poison orders
// and the orders whose event the producer will publish twice.
func workload(cfg config) []*order {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	customers := max(1, cfg.Orders/5)
	orders := make([]*order, cfg.Orders)
	for i := range orders {
		c := fmt.Sprintf("customer-%03d", rng.IntN(customers)+1)
		orders[i] = &order{
			OrderConfirmed: OrderConfirmed{
				OrderID:    fmt.Sprintf("order-%04d", i+1),
				CustomerID: c,
				Email:      c + "@example.com",
				TotalCents: 500 + rng.Int64N(20_000),
			},
			publishes: 1,
		}
	}
	for kind, i := range rng.Perm(cfg.Orders)[:min(cfg.Poison, cfg.Orders)] {
		orders[i].poison = kind%3 + 1
	}
	for _, i := range rng.Perm(cfg.Orders)[:min(cfg.Duplicates, cfg.Orders)] {
		orders[i].publishes = 2
	}
	for _, o := range orders {
		o.body = o.payload()
	}
	return orders
}

// payload is the event body, broken in one of three ways for a poison order.
func (o *order) payload() []byte {
	ev := o.OrderConfirmed
	if o.poison == 2 {
		ev.Email = ""
	}
	b, _ := json.Marshal(ev)
	switch o.poison {
	case 1: // cut short by a buggy serializer
		return b[:len(b)/2]
	case 3: // a client that sends the total as a decimal string
		return fmt.Appendf(nil, `{"order_id":%q,"customer_id":%q,"email":%q,"total_cents":"%d.%02d"}`,
			ev.OrderID, ev.CustomerID, ev.Email, ev.TotalCents/100, ev.TotalCents%100)
	}
	return b
}

// orderService is the order side: it confirms an order and publishes the
// event. It never talks to the notification service, so a slow or failing
// email provider cannot fail an order.
type orderService struct {
	pub   broker.Publisher
	topic string
}

// confirm publishes o's event, keyed by customer so that one customer's
// notifications are handled in order. Publish returns once the broker has
// durably accepted the event.
func (s *orderService) confirm(ctx context.Context, o *order) error {
	m := &broker.Message{
		ID:      eventID(o.OrderID),
		Key:     o.CustomerID,
		Body:    o.body,
		Headers: map[string]string{headerContentType: "application/json", headerEventType: "OrderConfirmed"},
	}
	if err := s.pub.Publish(ctx, s.topic, m); err != nil {
		return fmt.Errorf("order service: confirm %s: %w", o.OrderID, err)
	}
	return nil
}
