package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/brokerotel"
)

// print writes the run's summary: the same lines every run, with the numbers
// of this one.
func (r *result) print(w io.Writer) {
	cfg := r.cfg
	poison := 0
	for _, o := range r.orders {
		if o.poison != 0 {
			poison++
		}
	}
	sent, emailed := 0, 0
	for _, n := range r.emails {
		sent += n
		emailed++
	}
	twice := r.published - len(r.orders)

	fmt.Fprintf(w, "brokerkit orders demo on %s (seed %d)\n\n", broker.Redact(cfg.URL), cfg.Seed)

	fmt.Fprintf(w, "order service\n")
	fmt.Fprintf(w, "  accepted      %d orders in %v (%v per order): an order waits for one publish, never for email\n",
		len(r.orders), round(r.accepted), round(r.accepted/time.Duration(max(1, len(r.orders)))))
	fmt.Fprintf(w, "  published     %d OrderConfirmed events to %s (%d twice: a producer retried)\n",
		r.published, cfg.Topic, twice)

	fmt.Fprintf(w, "\nnotification service (%d workers, %d attempts, backoff %v..%v, timeout %v; SMTP %v-%v, %.0f%% refused, %.0f%% hang)\n",
		cfg.Concurrency, cfg.MaxAttempts, cfg.BackoffMin, cfg.BackoffMax, cfg.SendTimeout,
		smtpMinLatency, smtpMaxLatency, 100*smtpFailRate, 100*smtpHangRate)
	status := "all"
	if r.timedOut {
		status = fmt.Sprintf("NOT ALL (gave up after %v):", cfg.Deadline)
	}
	fmt.Fprintf(w, "  handled       %s %d events in %v\n", status, r.published, round(r.handled))
	fmt.Fprintf(w, "  sent          %d emails for %d orders = %d orders - %d poison, %s\n",
		sent, emailed, len(r.orders), poison, onceNote(sent, emailed))
	fmt.Fprintf(w, "  retried       %d failed attempts: %d SMTP 421 refusals, %d timeouts\n",
		r.smtpFailures+r.smtpTimeouts, r.smtpFailures, r.smtpTimeouts)
	fmt.Fprintf(w, "  suppressed    %d duplicate events skipped by idempotency.Dedupe (%d copies deferred while in progress)\n",
		r.suppressed, r.deferred)
	ids := make([]string, 0, len(r.deadLetters))
	for id := range r.deadLetters {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	colon := ":"
	if len(ids) == 0 {
		colon = ""
	}
	fmt.Fprintf(w, "  dead letters  %d events (%d orders) parked in %s.dlq%s\n", r.deadLetterEvents, len(ids), cfg.Topic, colon)
	for _, id := range ids {
		d := r.deadLetters[id]
		note := ""
		if r.emails[strings.TrimSuffix(id, eventSuffix)] > 0 {
			note = " (a copy of an event already emailed)"
		}
		fmt.Fprintf(w, "                  %s after %s attempt(s)%s: %s\n", id, d.attempts, note, shorten(d.reason, 120))
	}
	if r.peakLag >= 0 {
		fmt.Fprintf(w, "  peak lag      %d events waiting\n", r.peakLag)
	} else {
		fmt.Fprintf(w, "  peak lag      not reported by this broker\n")
	}
	lost, dup := r.lost(), r.emailedTwice()
	if r.timedOut {
		fmt.Fprintf(w, "  unfinished    %d orders neither emailed nor parked when the demo gave up%s\n", len(lost), list(lost))
	} else {
		fmt.Fprintf(w, "  lost          %d orders%s\n", len(lost), list(lost))
	}
	if len(dup) > 0 {
		fmt.Fprintf(w, "  emailed twice %d orders%s\n", len(dup), list(dup))
	}

	if r.metrics != nil {
		r.metrics.print(w)
	}

	fmt.Fprintf(w, "\nhad the order service called SMTP synchronously, %d of these %d orders would have failed\n"+
		"on email, and each would have waited %v on average for it (up to %v).\n",
		r.sync.failed, len(r.orders)-poison, round(r.sync.avg), round(r.sync.max))
	if r.ok() {
		fmt.Fprintf(w, "\nOK: every order was emailed exactly once or parked with its reason.\n")
	} else {
		fmt.Fprintf(w, "\nFAILED: some orders were not emailed exactly once nor parked.\n")
	}
}

// print writes the key figures of the Prometheus metrics, under their names.
func (m *metricsSummary) print(w io.Writer) {
	where := "not served"
	if m.url != "" {
		where = "served at " + m.url
	}
	fmt.Fprintf(w, "\nmetrics (%s)\n", where)
	var byOutcome []string
	for _, o := range []string{brokerotel.OutcomeOK, brokerotel.OutcomeRetry, brokerotel.OutcomeDeadLetter, brokerotel.OutcomeCancelled} {
		if n, ok := m.handled[o]; ok {
			byOutcome = append(byOutcome, fmt.Sprintf("%d %s", n, o))
		}
	}
	fmt.Fprintf(w, "  %-38s %d: %s (mean handler %v)\n", promHandled, m.handlerCalls(),
		strings.Join(byOutcome, ", "), round(time.Duration(m.meanHandler*float64(time.Second))))
	fmt.Fprintf(w, "  %-38s %d\n", promSent, m.sent)
	fmt.Fprintf(w, "  %s %s, %s %s at the end\n", promDepth, gauge(m.depth), promDeadLetters, gauge(m.deadLetters))
}

// gauge renders a gauge's value, "-" when the broker does not report it.
func gauge(v int64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprint(v)
}

func onceNote(sent, emailed int) string {
	if sent == emailed {
		return "each exactly once"
	}
	return fmt.Sprintf("%d sent more than once", sent-emailed)
}

// round keeps durations readable: microseconds below a millisecond, else
// hundredths of the unit.
func round(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < time.Second:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(10 * time.Millisecond)
}

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func list(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	if len(ids) > 10 {
		return ": " + strings.Join(ids[:10], ", ") + fmt.Sprintf(" and %d more", len(ids)-10)
	}
	return ": " + strings.Join(ids, ", ")
}
