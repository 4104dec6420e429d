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
//	go run ./examples/orders [-orders 200] [-seed 1] [-timeout 30s] [-metrics-addr 127.0.0.1:9464]
//
// The broker comes from BROKER_URL (default mem://, the embedded broker); every
// adapter is linked in, so the URL alone switches brokers:
//
//	BROKER_URL=amqp://guest:guest@127.0.0.1:5672/ go run ./examples/orders
//	BROKER_URL='kafka://127.0.0.1:9092?create_topics=true' go run ./examples/orders
//	AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
//	BROKER_URL='sqs://?region=us-east-1&endpoint=http://127.0.0.1:9324&create_queues=true&group=default&order_by_key=false' \
//	go run ./examples/orders
//
// The demo adds the notification consumer's settings to that URL as query
// parameters: group, concurrency, max_attempts, backoff_min, backoff_max and
// order_by_key (a parameter already in BROKER_URL wins). SQS has no fan-out and
// keeps order only on FIFO queues, hence group=default and order_by_key=false
// there.
//
// Both services are instrumented with package brokerotel: the order service's
// publisher starts a trace per event and counts what it sends, the
// notification consumer traces and measures each handler call, and the
// broker's depth, lag and dead letters are read at each scrape. The metrics
// are served for Prometheus at http://127.0.0.1:9464/metrics while the demo
// runs (-metrics-hold keeps them up after the report), and the report ends
// with their key figures.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/brokerkit/broker"
	// Each adapter registers its URL scheme when imported.
	_ "github.com/brokerkit/broker/adapters/kafkabroker"  // kafka://
	_ "github.com/brokerkit/broker/adapters/membroker"    // mem://
	_ "github.com/brokerkit/broker/adapters/rabbitbroker" // amqp://, amqps://
	_ "github.com/brokerkit/broker/adapters/sqsbroker"    // sqs://
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
	metricsAddr := flag.String("metrics-addr", "127.0.0.1:9464", "serve Prometheus metrics at http://<addr>/metrics (\"\" disables)")
	metricsHold := flag.Duration("metrics-hold", 0, "keep serving the metrics this long after the report (until interrupted)")
	flag.Parse()
	cfg.URL = broker.URLFromEnv(cfg.URL)

	// The consumer logs what it cannot return (each dead letter, at Info);
	// keep the summary readable and show only warnings.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))

	// Not being scraped is no reason to fail the demo: a port in use costs
	// only the endpoint.
	tel, err := newTelemetry(*metricsAddr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "orders: %v (choose another -metrics-addr, or \"\" for none)\n", err)
	}
	defer tel.Close()
	cfg.Telemetry = tel
	if tel.url != "" {
		fmt.Printf("metrics: %s\n\n", tel.url)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		return 1
	}
	res.print(os.Stdout)
	if tel.url != "" && *metricsHold > 0 {
		fmt.Printf("\nserving %s for %v (Ctrl-C to stop)\n", tel.url, *metricsHold)
		select {
		case <-ctx.Done():
		case <-time.After(*metricsHold):
		}
	}
	if !res.ok() {
		return 1
	}
	return 0
}
