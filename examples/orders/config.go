package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/brokerkit/broker"
)

// config is one run of the scenario.
type config struct {
	URL        string // BROKER_URL; consumer settings in it win (see consumerURL)
	Topic      string // the events' topic; dead letters go to Topic+".dlq"
	Orders     int    // orders the order service accepts
	Poison     int    // orders whose event payload is invalid
	Duplicates int    // orders whose event the producer publishes twice
	Seed       uint64 // decides customers, poison orders, duplicates and SMTP behaviour

	Concurrency int           // notification handlers running at once
	MaxAttempts int           // deliveries of an event before it is dead-lettered
	BackoffMin  time.Duration // first redelivery delay
	BackoffMax  time.Duration // longest redelivery delay
	OrderByKey  bool          // one customer's notifications in order
	SendTimeout time.Duration // middleware.Timeout around each notification
	Deadline    time.Duration // how long to wait for every event to be dealt with

	Logger *slog.Logger // for Dedupe; nil means slog.Default()
	// Telemetry is where the OpenTelemetry instrumentation reports, and the
	// registry the report reads the metrics from; nil means the global
	// providers (no-ops unless the program set some) and no metrics in the
	// report.
	Telemetry *telemetry
}

func defaultConfig() config {
	return config{
		URL:         "mem://",
		Topic:       "orders.confirmed",
		Orders:      200,
		Poison:      3,
		Duplicates:  8,
		Seed:        1,
		Concurrency: 8,
		MaxAttempts: 4,
		BackoffMin:  20 * time.Millisecond,
		BackoffMax:  200 * time.Millisecond,
		OrderByKey:  true,
		SendTimeout: 100 * time.Millisecond,
		Deadline:    30 * time.Second,
	}
}

// Consumer groups of the two consumers, unless BROKER_URL names a group.
// The audit consumer reads the dead-letter topic in a group of its own, so
// that the parked events stay in the default group for brokerctl dlq peek
// and redrive. A broker without fan-out (SQS) serves only the default group:
// there BROKER_URL says group=default, for both.
const (
	notificationGroup = "notifications"
	auditGroup        = "dead-letter-audit"
)

// consumerURL adds the notification consumer's settings to the broker URL as
// query parameters, the portable way to configure a consumer opened with
// broker.OpenConsumer (see broker.ConsumerOptions for the names). A parameter
// already in the URL wins over the demo's.
func consumerURL(cfg config) (string, error) {
	return withQuery(cfg.URL, map[string]string{
		"group":        notificationGroup,
		"concurrency":  strconv.Itoa(cfg.Concurrency),
		"max_attempts": strconv.Itoa(cfg.MaxAttempts),
		"backoff_min":  cfg.BackoffMin.String(),
		"backoff_max":  cfg.BackoffMax.String(),
		"order_by_key": strconv.FormatBool(cfg.OrderByKey),
	}, false)
}

// withQuery returns raw with params added to its query; with override they
// replace parameters of the same name, else those in raw win. The part
// before '?' is kept byte for byte ("mem://" would not survive url.URL).
func withQuery(raw string, params map[string]string, override bool) (string, error) {
	base, query, _ := strings.Cut(raw, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("broker URL %q: query: %w", broker.Redact(raw), err)
	}
	for k, v := range params {
		if override || !q.Has(k) {
			q.Set(k, v)
		}
	}
	return base + "?" + q.Encode(), nil
}

// effective returns cfg with the consumer settings that BROKER_URL overrode.
func effective(cfg config, consumerURL string) config {
	_, query, _ := strings.Cut(consumerURL, "?")
	q, _ := url.ParseQuery(query)
	if n, err := strconv.Atoi(q.Get("max_attempts")); err == nil && n > 0 {
		cfg.MaxAttempts = n
	}
	if n, err := strconv.Atoi(q.Get("concurrency")); err == nil && n > 0 {
		cfg.Concurrency = n
	}
	if d, err := time.ParseDuration(q.Get("backoff_min")); err == nil {
		cfg.BackoffMin = d
	}
	if d, err := time.ParseDuration(q.Get("backoff_max")); err == nil {
		cfg.BackoffMax = d
	}
	if b, err := strconv.ParseBool(q.Get("order_by_key")); err == nil {
		cfg.OrderByKey = b
	}
	return cfg
}

// groupOf returns the consumer group that rawURL's query names.
func groupOf(rawURL string) string {
	_, query, _ := strings.Cut(rawURL, "?")
	q, _ := url.ParseQuery(query)
	if g := q.Get("group"); g != "" {
		return g
	}
	return broker.DefaultGroup
}
