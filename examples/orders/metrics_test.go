package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The Prometheus names that brokerotel's documentation promises.
func TestPrometheusNames(t *testing.T) {
	for got, want := range map[string]string{
		promHandled:      "brokerkit_consumer_handled_total",
		promDeadLettered: "brokerkit_consumer_dead_lettered_total",
		promSent:         "messaging_client_sent_messages_total",
		promDuration:     "messaging_process_duration_seconds",
		promDepth:        "brokerkit_queue_depth",
		promLag:          "brokerkit_queue_lag",
		promDeadLetters:  "brokerkit_queue_dead_letters",
	} {
		if got != want {
			t.Errorf("Prometheus name %q, want %q", got, want)
		}
	}
}

// scrape fetches and parses the metrics at url.
func scrape(ctx context.Context, url string) ([]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	families := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		families = append(families, f)
	}
	return families, nil
}

// checkMetrics compares the brokerotel counters of a run, m, with what the
// run counted itself.
func checkMetrics(t *testing.T, res *result, m *metricsSummary) {
	t.Helper()
	if m.sent != int64(res.published) {
		t.Errorf("%s = %d, want the %d events published", promSent, m.sent, res.published)
	}
	for _, c := range []struct {
		outcome string
		want    int64
	}{{"ok", res.calls.acked}, {"retry", res.calls.retried}, {"dead_letter", res.calls.parked}, {"cancelled", res.calls.cancelled}} {
		if got := m.handled[c.outcome]; got != c.want {
			t.Errorf("%s{%s=%q} = %d, want %d", promHandled, labelOutcome, c.outcome, got, c.want)
		}
	}
	if got, want := m.handlerCalls(), res.calls.total(); got != want {
		t.Errorf("%s = %d over every outcome, want the %d handler calls", promHandled, got, want)
	}
	if m.deadLettered != res.calls.parked {
		t.Errorf("%s = %d, want %d", promDeadLettered, m.deadLettered, res.calls.parked)
	}
	if res.calls.acked < int64(res.published-res.deadLetterEvents) {
		t.Errorf("%d handler calls succeeded, fewer than the %d events published and not dead-lettered",
			res.calls.acked, res.published-res.deadLetterEvents)
	}
}

// The demo serves its metrics while it runs, and what a scrape shows
// afterwards is what the run counted.
func TestMetricsEndpoint(t *testing.T) {
	tel, err := newTelemetry("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close()
	if !strings.HasPrefix(tel.url, "http://127.0.0.1:") || !strings.HasSuffix(tel.url, "/metrics") {
		t.Fatalf("metrics URL %q", tel.url)
	}
	cfg := testConfig("orders-test-metrics")
	cfg.Telemetry = tel

	// Scrape throughout the run: the broker's gauges are there while it runs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type scraped struct {
		n      int // scrapes
		gauges bool
		err    error
	}
	during := make(chan scraped, 1)
	go func() {
		var s scraped
		defer func() { during <- s }()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			fams, err := scrape(ctx, tel.url)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				s.err = err
				return
			}
			s.n++
			if sum := summarize(fams, cfg.Topic); sum.depth >= 0 && sum.lag >= 0 && sum.deadLetters >= 0 {
				s.gauges = true
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	res := runScenario(t, cfg)
	cancel()
	s := <-during
	if s.err != nil {
		t.Errorf("scraping during the run: %v", s.err)
	}
	if !s.gauges {
		t.Errorf("%d scrapes during the run, none with %s, %s and %s for %s", s.n, promDepth, promLag, promDeadLetters, cfg.Topic)
	}

	fams, err := scrape(context.Background(), tel.url)
	if err != nil {
		t.Fatalf("scraping after the run: %v", err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
	}
	for _, n := range []string{promHandled, promSent, promDuration} {
		if !names[n] {
			t.Errorf("no %s in the scrape", n)
		}
	}
	got := summarize(fams, cfg.Topic)
	checkMetrics(t, res, got)
	// On the embedded broker each event copy is handled to its end once.
	if n := res.calls.acked + res.calls.parked; n != int64(res.published) {
		t.Errorf("%d handler calls acknowledged or dead-lettered, want one per event published (%d)", n, res.published)
	}
	if res.calls.parked != int64(res.deadLetterEvents) {
		t.Errorf("%d dead-letter decisions, %d dead letters", res.calls.parked, res.deadLetterEvents)
	}

	// The report prints the same figures, with where to look.
	if res.metrics == nil {
		t.Fatal("no metrics in the result")
	}
	checkMetrics(t, res, res.metrics)
	var out bytes.Buffer
	res.print(&out)
	for _, want := range []string{
		"metrics (served at " + tel.url + ")",
		fmt.Sprintf("%-38s %d: %d ok, %d retry, %d dead_letter", promHandled, res.calls.total(), res.calls.acked, res.calls.retried, res.calls.parked),
		fmt.Sprintf("%-38s %d\n", promSent, res.published),
		promDepth + " 0,",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// An address in use leaves the metrics unserved and the demo running.
func TestMetricsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tel, err := newTelemetry(ln.Addr().String())
	if err == nil {
		t.Error("no error for an address in use")
	}
	defer tel.Close()
	if tel.url != "" {
		t.Errorf("metrics URL %q for an address in use", tel.url)
	}
	cfg := testConfig("orders-test-metrics-unserved")
	cfg.Orders, cfg.Duplicates = 10, 2
	cfg.Telemetry = tel
	res := runScenario(t, cfg)
	checkMetrics(t, res, res.metrics)
	var out bytes.Buffer
	res.print(&out)
	if !strings.Contains(out.String(), "metrics (not served)") {
		t.Errorf("report does not say the metrics were not served:\n%s", out.String())
	}
}
