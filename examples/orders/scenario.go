package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/dlq"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/middleware"
)

// config is one run of the scenario.
type config struct {
	URL        string // broker URL, without consumer settings (see consumerURL)
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

// Consumer groups of the two consumers.
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

// result is what a run observed.
type result struct {
	cfg       config
	orders    []*order
	published int

	accepted time.Duration // accepting every order (publishing its event)
	handled  time.Duration // from the first publish until every event was dealt with
	timedOut bool

	emails           map[string]int        // order ID -> emails sent
	deadLetters      map[string]deadLetter // event ID -> first dead letter seen
	deadLetterEvents int                   // dead letters, duplicates included
	smtpFailures     int64
	smtpTimeouts     int64
	suppressed       int64 // duplicates skipped by Dedupe (Claim answered Done)
	deferred         int64 // copies refused with ErrInProgress and redelivered
	peakLag          int64 // -1 when the broker does not report it

	sync syncEstimate
}

// deadLetter is one event parked in the dead-letter topic.
type deadLetter struct {
	reason   string
	attempts string
}

// lost returns the orders that were neither notified nor dead-lettered.
func (r *result) lost() []string {
	var out []string
	for _, o := range r.orders {
		if _, parked := r.deadLetters[eventID(o.OrderID)]; r.emails[o.OrderID] == 0 && !parked {
			out = append(out, o.OrderID)
		}
	}
	return out
}

// emailedTwice returns the orders whose customer got more than one email.
func (r *result) emailedTwice() []string {
	var out []string
	for _, o := range r.orders {
		if r.emails[o.OrderID] > 1 {
			out = append(out, o.OrderID)
		}
	}
	return out
}

// ok reports whether every order was dealt with once: emailed exactly once,
// or parked in the dead-letter topic.
func (r *result) ok() bool {
	return !r.timedOut && len(r.lost()) == 0 && len(r.emailedTwice()) == 0
}

// run plays the scenario: the order service accepts the orders and publishes
// an event for each; the notification service emails the customers through a
// slow and flaky provider; a third consumer watches the dead-letter topic.
func run(ctx context.Context, cfg config) (*result, error) {
	res := &result{cfg: cfg, orders: workload(cfg), peakLag: -1}
	deadTopic := cfg.Topic + ".dlq"
	notifyURL, err := consumerURL(cfg)
	if err != nil {
		return nil, err
	}
	cfg = effective(cfg, notifyURL)
	res.cfg = cfg
	auditURL, err := withQuery(cfg.URL, map[string]string{"group": auditGroup}, true)
	if err != nil {
		return nil, err
	}

	pub, err := broker.OpenPublisher(ctx, cfg.URL)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	notifications, err := broker.OpenConsumer(ctx, notifyURL)
	if err != nil {
		return nil, err
	}
	defer notifications.Close()
	audit, err := broker.OpenConsumer(ctx, auditURL)
	if err != nil {
		return nil, err
	}
	defer audit.Close()

	smtp := newSMTPServer(cfg.Seed)
	store := &countingStore{Store: idempotency.NewMemoryStore(nil)}
	final := &outcomes{maxAttempts: cfg.MaxAttempts}
	handler := broker.Chain((&notifier{smtp: smtp}).handle,
		final.middleware,                    // counts what is acknowledged or parked
		middleware.Recover(),                // a bug in the handler redelivers, it does not crash the service
		middleware.Timeout(cfg.SendTimeout), // a hung SMTP connection is a failed attempt
		idempotency.Dedupe(store, &idempotency.DedupeOptions{Namespace: notificationGroup, Logger: cfg.Logger}),
	)
	parked := &deadLetterLog{byID: map[string]deadLetter{}}

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	failed := make(chan error, 2)
	consume := func(c broker.Consumer, topic string, h broker.Handler) {
		wg.Go(func() {
			err := c.Consume(runCtx, topic, h)
			switch {
			case err == nil || runCtx.Err() != nil:
			case errors.Is(err, broker.ErrUnsupported):
				failed <- fmt.Errorf("consume %s: %w (on a broker that cannot keep per-key order, run with -order-by-key=false)", topic, err)
			default:
				failed <- fmt.Errorf("consume %s: %w", topic, err)
			}
		})
	}
	consume(audit, deadTopic, parked.handle)
	consume(notifications, cfg.Topic, handler)
	// A group receives what is published after it subscribed: wait for both.
	for _, s := range []struct {
		c            broker.Consumer
		topic, group string
	}{{audit, deadTopic, auditGroup}, {notifications, cfg.Topic, notificationGroup}} {
		if err := waitSubscribed(runCtx, s.c, s.topic, failed); err != nil {
			return nil, fmt.Errorf("consumer group %s on %s: %w", s.group, s.topic, err)
		}
	}
	var peak atomic.Int64
	peak.Store(-1)
	wg.Go(func() { sampleLag(runCtx, notifications, cfg.Topic, &peak) })

	// The order service: accepting an order costs one publish, whatever the
	// state of the email provider.
	svc := &orderService{pub: pub, topic: cfg.Topic}
	start := time.Now()
	for _, o := range res.orders {
		for range o.publishes { // a second publish: the producer retried after a lost reply
			if err := svc.confirm(ctx, o); err != nil {
				return nil, err
			}
			res.published++
		}
	}
	res.accepted = time.Since(start)

	// Wait until every event copy is acknowledged or parked, and every parked
	// one has reached the dead-letter topic.
	deadline := time.NewTimer(cfg.Deadline)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for final.settled() < int64(res.published) || parked.count() < final.parked.Load() {
		select {
		case <-tick.C:
		case <-deadline.C:
			res.timedOut = true
		case err := <-failed:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if res.timedOut {
			break
		}
	}
	res.handled = time.Since(start)
	stop()
	wg.Wait()

	res.emails = smtp.emails()
	res.deadLetters, res.deadLetterEvents = parked.snapshot()
	res.smtpFailures, res.smtpTimeouts = smtp.failures.Load(), smtp.timeouts.Load()
	res.suppressed, res.deferred = store.done.Load(), store.inProgress.Load()
	res.peakLag = peak.Load()
	res.sync = estimateSync(smtp, res.orders, cfg.SendTimeout)
	return res, nil
}

// waitSubscribed waits until the broker reports a consumer on topic for c's
// group, so that nothing published from now on is missed. A broker that does
// not report consumers is trusted to keep messages for the group.
func waitSubscribed(ctx context.Context, c broker.Consumer, topic string, failed <-chan error) error {
	sr, ok := c.(broker.StatsReader)
	if !ok {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := sr.Stats(ctx, topic, "")
		switch {
		case errors.Is(err, broker.ErrUnsupported), err == nil && st.Consumers < 0:
			return nil
		case err == nil && st.Consumers > 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("not subscribed after 10s (last stats error: %v)", err)
		}
		select {
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// sampleLag records the highest lag of topic for c's group until ctx ends.
func sampleLag(ctx context.Context, c broker.Consumer, topic string, peak *atomic.Int64) {
	sr, ok := c.(broker.StatsReader)
	if !ok {
		return
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := sr.Stats(ctx, topic, ""); err == nil && st.Lag > peak.Load() {
			peak.Store(st.Lag)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// deadLetterLog is the handler of the audit consumer: it records each event
// parked in the dead-letter topic, with the reason the consumer wrote.
type deadLetterLog struct {
	mu   sync.Mutex
	byID map[string]deadLetter
	n    int
}

func (d *deadLetterLog) handle(ctx context.Context, m *broker.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	if _, seen := d.byID[m.ID]; !seen {
		d.byID[m.ID] = deadLetter{reason: m.Headers[dlq.HeaderReason], attempts: m.Headers[dlq.HeaderAttempts]}
	}
	return nil
}

func (d *deadLetterLog) count() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(d.n)
}

func (d *deadLetterLog) snapshot() (map[string]deadLetter, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]deadLetter, len(d.byID))
	for k, v := range d.byID {
		out[k] = v
	}
	return out, d.n
}

// syncEstimate is what the valid orders would have met had the order service
// called the email provider synchronously: each first attempt's outcome.
type syncEstimate struct {
	failed int           // orders whose first send failed or hung
	avg    time.Duration // mean time an order would have waited for the send
	max    time.Duration // longest such wait (a hang costs the whole timeout)
}

func estimateSync(smtp *smtpServer, orders []*order, timeout time.Duration) syncEstimate {
	var e syncEstimate
	var total time.Duration
	n := 0
	for _, o := range orders {
		if o.poison != 0 {
			continue
		}
		n++
		a := smtp.plan(o.OrderID, 1)
		wait := a.latency
		if a.hang {
			wait = timeout
		}
		if a.fail || a.hang {
			e.failed++
		}
		total += wait
		e.max = max(e.max, wait)
	}
	if n > 0 {
		e.avg = total / time.Duration(n)
	}
	return e
}
