// Command orders is the order -> notification demo.
//
// An order service that emails its customers synchronously fails orders
// whenever the email provider is slow or refuses a connection. Here the order
// service only publishes an OrderConfirmed event per order; a notification
// service consumes the events and emails the customers through a slow and
// flaky provider, with retries, a timeout, deduplication and a dead-letter
// topic for events that can never be sent. The run prints what happened and
// exits with status 1 if any order was lost or emailed twice.
//
//	go run ./examples/orders [-orders 200] [-seed 1] [-timeout 30s]
//
// The broker comes from BROKER_URL (default mem://, the embedded broker). The
// demo adds the notification consumer's settings to that URL as query
// parameters: group, concurrency, max_attempts, backoff_min, backoff_max and
// order_by_key (a parameter already in BROKER_URL wins).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/brokerkit/broker"
	_ "github.com/brokerkit/broker/adapters/membroker" // mem://
	// Each adapter registers its URL scheme when imported; add the others here:
	// _ "github.com/brokerkit/broker/adapters/rabbitbroker" // amqp://
	// _ "github.com/brokerkit/broker/adapters/kafkabroker"  // kafka://
	// _ "github.com/brokerkit/broker/adapters/sqsbroker"    // sqs://
)

func main() { os.Exit(runMain()) }

// runMain runs the demo and returns the exit status: 0 when every order was
// emailed exactly once or parked with its reason, 1 otherwise.
func runMain() int {
	cfg := defaultConfig()
	flag.IntVar(&cfg.Orders, "orders", cfg.Orders, "orders the order service accepts")
	flag.IntVar(&cfg.Poison, "poison", cfg.Poison, "orders whose event payload is invalid")
	flag.IntVar(&cfg.Duplicates, "duplicates", cfg.Duplicates, "orders whose event is published twice")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed for the workload and the email provider's behaviour")
	flag.StringVar(&cfg.Topic, "topic", cfg.Topic, "topic of the OrderConfirmed events")
	flag.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "notification handlers running at once")
	flag.BoolVar(&cfg.OrderByKey, "order-by-key", cfg.OrderByKey, "handle one customer's events in order (false on brokers that cannot)")
	flag.DurationVar(&cfg.Deadline, "timeout", cfg.Deadline, "how long to wait for every event to be handled")
	flag.Parse()
	cfg.URL = broker.URLFromEnv(cfg.URL)

	// The consumer logs what it cannot return (each dead letter, at Info);
	// keep the summary readable and show only warnings.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		return 1
	}
	res.print(os.Stdout)
	if !res.ok() {
		return 1
	}
	return 0
}
