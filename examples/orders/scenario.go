package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/brokerotel"
	"github.com/brokerkit/broker/dlq"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/middleware"
)

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

	// Handler calls of the notification consumer by what became of them, as
	// the demo's outermost middleware saw them.
	calls handlerCalls
	// metrics is what the Prometheus exporter shows at the end of the run;
	// nil without cfg.Telemetry.
	metrics *metricsSummary

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
	deadTopic := broker.DeadLetterTopic(cfg.Topic)
	notifyURL, err := consumerURL(cfg)
	if err != nil {
		return nil, err
	}
	cfg = effective(cfg, notifyURL)
	res.cfg = cfg
	auditURL, err := withQuery(cfg.URL, map[string]string{"group": auditGroup}, false)
	if err != nil {
		return nil, err
	}
	var otelOpts []brokerotel.Option // the global providers
	if cfg.Telemetry != nil {
		otelOpts = cfg.Telemetry.options()
	}
	// WithURL: the broker as messaging.system, and the consumer's group and
	// max attempts, from which Metrics and Tracing infer each outcome.
	pubURL := cfg.URL // one URL serves the publisher and the consumers
	pubOpts := append(otelOpts[:len(otelOpts):len(otelOpts)], brokerotel.WithURL(pubURL))
	notifyOpts := append(otelOpts[:len(otelOpts):len(otelOpts)], brokerotel.WithURL(notifyURL))

	pub, err := broker.OpenPublisher(ctx, pubURL)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	notifications, err := openConsumer(ctx, notifyURL)
	if err != nil {
		return nil, err
	}
	defer notifications.Close()
	audit, err := openConsumer(ctx, auditURL)
	if err != nil {
		return nil, err
	}
	defer audit.Close()

	smtp := newSMTPServer(cfg.Seed)
	store := &countingStore{Store: idempotency.NewMemoryStore(nil)}
	final := &outcomes{maxAttempts: cfg.MaxAttempts}
	handler := broker.Chain((&notifier{smtp: smtp}).handle,
		brokerotel.Tracing(notifyOpts...),   // a span per delivery, in the trace of the publish
		brokerotel.Metrics(notifyOpts...),   // handled, failed, retried, dead-lettered, duration
		final.middleware,                    // counts the handler calls by outcome
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
	}{{audit, deadTopic, groupOf(auditURL)}, {notifications, cfg.Topic, groupOf(notifyURL)}} {
		if err := waitSubscribed(runCtx, s.c, s.topic, failed); err != nil {
			return nil, fmt.Errorf("consumer group %s on %s: %w", s.group, s.topic, err)
		}
	}
	var peak atomic.Int64
	peak.Store(-1)
	wg.Go(func() { sampleLag(runCtx, notifications, cfg.Topic, &peak) })
	// Depth, lag and dead letters as gauges, read from the broker at each
	// scrape.
	if sr, ok := notifications.(broker.StatsReader); ok {
		unregister, err := brokerotel.ObserveStats(sr, []brokerotel.Target{{Topic: cfg.Topic}}, notifyOpts...)
		if err != nil {
			return nil, err
		}
		defer unregister()
	}

	// The order service: accepting an order costs one publish, whatever the
	// state of the email provider. Its publisher starts the trace of each
	// event and counts what it sends.
	svc := &orderService{pub: brokerotel.WrapPublisher(pub, pubOpts...), topic: cfg.Topic}
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
	res.calls = final.calls()
	res.sync = estimateSync(smtp, res.orders, cfg.SendTimeout)
	if cfg.Telemetry != nil {
		// While the gauges are still registered and the consumers open.
		if res.metrics, err = cfg.Telemetry.summary(cfg.Topic); err != nil {
			return nil, err
		}
		res.metrics.url = cfg.Telemetry.url
	}
	return res, nil
}

// openConsumer opens a consumer for rawURL, with a hint when the broker
// cannot serve its group.
func openConsumer(ctx context.Context, rawURL string) (broker.Consumer, error) {
	c, err := broker.OpenConsumer(ctx, rawURL)
	if errors.Is(err, broker.ErrUnsupported) {
		return nil, fmt.Errorf("%w (on a broker without fan-out, such as SQS, add group=default to BROKER_URL)", err)
	}
	return c, err
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
