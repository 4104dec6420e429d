package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/brokerkit/broker/brokerotel"
)

// metricsPath is where the Prometheus metrics are served.
const metricsPath = "/metrics"

// Prometheus names of the brokerotel instruments the report reads, as the
// exporter translates them: brokerkit_consumer_handled_total and so on.
var (
	promHandled      = promName(brokerotel.MetricHandled, "{message}", otlptranslator.MetricTypeMonotonicCounter)
	promDeadLettered = promName(brokerotel.MetricDeadLettered, "{message}", otlptranslator.MetricTypeMonotonicCounter)
	promSent         = promName(brokerotel.MetricSentMessages, "{message}", otlptranslator.MetricTypeMonotonicCounter)
	promDuration     = promName(brokerotel.MetricProcessDuration, "s", otlptranslator.MetricTypeHistogram)
	promDepth        = promName(brokerotel.MetricDepth, "{message}", otlptranslator.MetricTypeGauge)
	promLag          = promName(brokerotel.MetricLag, "{message}", otlptranslator.MetricTypeGauge)
	promDeadLetters  = promName(brokerotel.MetricDeadLetters, "{message}", otlptranslator.MetricTypeGauge)
)

// translation is how the exporter names metrics and labels: Prometheus's
// classic character set, with unit and _total suffixes.
var translation = otlptranslator.UnderscoreEscapingWithSuffixes

// Prometheus label names of the attributes the report filters and groups by.
const (
	labelTopic   = "messaging_destination_name"
	labelOutcome = "brokerkit_outcome"
)

// telemetry is the demo's OpenTelemetry setup: an SDK meter provider whose
// reader is the Prometheus exporter, on a registry of its own that is served
// at /metrics, and an SDK tracer provider, so that the trace context travels
// in each event's headers (add an exporter with sdktrace.WithBatcher to see
// the traces).
type telemetry struct {
	registry *prometheus.Registry
	meters   *sdkmetric.MeterProvider
	tracers  *sdktrace.TracerProvider

	// url is where the metrics are served, empty when they are not.
	url    string
	server *http.Server
	served chan struct{} // closed when the server has stopped
}

// newTelemetry sets up the providers and, unless addr is empty, serves the
// metrics on addr ("127.0.0.1:0" picks a free port; see url). A listen error
// comes back with a working telemetry that serves nothing, since the demo can
// run without being scraped. traceOpts go to the tracer provider.
func newTelemetry(addr string, traceOpts ...sdktrace.TracerProviderOption) (t *telemetry, listenErr error) {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(translation))
	if err != nil {
		// Only a registry that refuses the exporter's collector fails here,
		// which a fresh one never does.
		panic(fmt.Sprintf("orders: Prometheus exporter: %v", err))
	}
	t = &telemetry{
		registry: reg,
		meters:   sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)),
		tracers:  sdktrace.NewTracerProvider(traceOpts...),
	}
	if addr == "" {
		return t, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return t, fmt.Errorf("metrics not served: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(metricsPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	t.url = "http://" + ln.Addr().String() + metricsPath
	t.served = make(chan struct{})
	go func() {
		defer close(t.served)
		_ = t.server.Serve(ln) // ErrServerClosed after Close
	}()
	return t, nil
}

// options are the brokerotel options that send to t's providers.
func (t *telemetry) options() []brokerotel.Option {
	return []brokerotel.Option{brokerotel.WithMeterProvider(t.meters), brokerotel.WithTracerProvider(t.tracers)}
}

// Close stops serving the metrics and shuts the providers down.
func (t *telemetry) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	if t.server != nil {
		errs = append(errs, t.server.Shutdown(ctx))
		<-t.served
	}
	errs = append(errs, t.meters.Shutdown(ctx), t.tracers.Shutdown(ctx))
	return errors.Join(errs...)
}

// metricsSummary is what the Prometheus exporter shows of one topic: the
// figures the report prints.
type metricsSummary struct {
	url          string           // where they are served; empty when not
	handled      map[string]int64 // handler calls by outcome
	deadLettered int64
	sent         int64   // events published
	meanHandler  float64 // seconds, over every handler call
	depth        int64   // the gauges at the end of the run; -1 when not reported
	lag          int64
	deadLetters  int64
}

// summary gathers the registry, as a scrape would, and sums topic's series.
func (t *telemetry) summary(topic string) (*metricsSummary, error) {
	families, err := t.registry.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering metrics: %w", err)
	}
	return summarize(families, topic), nil
}

// summarize reads topic's figures from metric families, gathered from a
// registry or parsed from a scrape.
func summarize(families []*dto.MetricFamily, topic string) *metricsSummary {
	s := &metricsSummary{handled: map[string]int64{}, depth: -1, lag: -1, deadLetters: -1}
	var durationSum float64
	var durationCount uint64
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if label(m, labelTopic) != topic {
				continue
			}
			switch f.GetName() {
			case promHandled:
				s.handled[label(m, labelOutcome)] += int64(m.GetCounter().GetValue())
			case promDeadLettered:
				s.deadLettered += int64(m.GetCounter().GetValue())
			case promSent:
				s.sent += int64(m.GetCounter().GetValue())
			case promDuration:
				durationSum += m.GetHistogram().GetSampleSum()
				durationCount += m.GetHistogram().GetSampleCount()
			case promDepth:
				s.depth = int64(m.GetGauge().GetValue())
			case promLag:
				s.lag = int64(m.GetGauge().GetValue())
			case promDeadLetters:
				s.deadLetters = int64(m.GetGauge().GetValue())
			}
		}
	}
	if durationCount > 0 {
		s.meanHandler = durationSum / float64(durationCount)
	}
	return s
}

// handlerCalls is the sum of handled over every outcome.
func (s *metricsSummary) handlerCalls() int64 {
	var n int64
	for _, v := range s.handled {
		n += v
	}
	return n
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// promName is the name the exporter gives an instrument.
func promName(name, unit string, kind otlptranslator.MetricType) string {
	namer := otlptranslator.NewMetricNamer("", translation)
	n, err := namer.Build(otlptranslator.Metric{Name: name, Unit: unit, Type: kind})
	if err != nil {
		panic(fmt.Sprintf("orders: Prometheus name of %s: %v", name, err))
	}
	return n
}
