package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) {
	// The consumers log each dead letter at Info; the tests check them instead.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	testenv.Main(m)
}

func testConfig(name string) config {
	cfg := defaultConfig()
	cfg.URL = "mem://" + name // a broker of its own
	cfg.Orders = 40
	cfg.Poison = 3
	cfg.Duplicates = 6
	cfg.Deadline = 20 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

// runScenario runs cfg and checks the invariants: every valid order emailed
// exactly once and not dead-lettered, every poison order dead-lettered at
// once with its reason and never emailed, nothing lost.
func runScenario(t *testing.T, cfg config) *result {
	t.Helper()
	res, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res.print(&out)
	t.Logf("summary:\n%s", out.String())

	if res.timedOut {
		t.Fatalf("not every event was handled within %v", cfg.Deadline)
	}
	if lost := res.lost(); len(lost) > 0 {
		t.Errorf("lost orders: %v", lost)
	}
	poisonSeen := 0
	for _, o := range res.orders {
		d, parked := res.deadLetters[eventID(o.OrderID)]
		if o.poison == 0 {
			if n := res.emails[o.OrderID]; n != 1 {
				t.Errorf("%s: %d emails, want exactly 1", o.OrderID, n)
			}
			if parked {
				t.Errorf("%s: a valid order was dead-lettered: %s", o.OrderID, d.reason)
			}
			continue
		}
		poisonSeen++
		if n := res.emails[o.OrderID]; n != 0 {
			t.Errorf("poison %s: %d emails, want none", o.OrderID, n)
		}
		if !parked {
			t.Errorf("poison %s is not in the dead-letter topic", o.OrderID)
			continue
		}
		if !strings.Contains(d.reason, "invalid payload") || d.attempts != "1" {
			t.Errorf("poison %s parked after %s attempts with reason %q; want 1 attempt (permanent) and the decode error",
				o.OrderID, d.attempts, d.reason)
		}
	}
	if poisonSeen != cfg.Poison {
		t.Errorf("workload has %d poison orders, want %d", poisonSeen, cfg.Poison)
	}
	if !res.ok() {
		t.Error("result is not ok: the demo would exit with status 1")
	}
	if !strings.Contains(out.String(), "lost          0 orders") {
		t.Error("summary does not report 0 lost orders")
	}
	return res
}

func TestScenario(t *testing.T) {
	cfg := testConfig("orders-test")
	res := runScenario(t, cfg)

	// Each duplicate of a valid order is skipped by Dedupe; a duplicate of a
	// poison order fails like the original and is parked too.
	dupValid, dupPoison := 0, 0
	for _, o := range res.orders {
		switch {
		case o.publishes == 1:
		case o.poison == 0:
			dupValid++
		default:
			dupPoison++
		}
	}
	if res.published != cfg.Orders+cfg.Duplicates {
		t.Errorf("published %d events, want %d", res.published, cfg.Orders+cfg.Duplicates)
	}
	if res.suppressed != int64(dupValid) {
		t.Errorf("Dedupe skipped %d duplicates, want %d", res.suppressed, dupValid)
	}
	if res.deadLetterEvents != cfg.Poison+dupPoison {
		t.Errorf("%d dead letters, want %d", res.deadLetterEvents, cfg.Poison+dupPoison)
	}
	if res.smtpFailures+res.smtpTimeouts == 0 {
		t.Error("no send failed: the flaky provider was not exercised (seed or rates changed?)")
	}
	if res.peakLag <= 0 {
		t.Errorf("peak lag %d, want the backlog the slow consumer built up", res.peakLag)
	}
}

// Every event published twice, poison ones included; one customer's events
// need not be ordered, so copies of one event run at the same time and
// Dedupe turns the later one away with ErrInProgress.
func TestScenarioEveryEventTwice(t *testing.T) {
	cfg := testConfig("orders-test-twice")
	cfg.Orders = 30
	cfg.Duplicates = cfg.Orders
	cfg.OrderByKey = false
	cfg.MaxAttempts = 20 // refusals while the original is in progress use attempts too
	res := runScenario(t, cfg)
	if res.suppressed+res.deferred == 0 {
		t.Error("Dedupe turned no copy away")
	}
	if res.deadLetterEvents != 2*cfg.Poison {
		t.Errorf("%d dead letters, want both copies of each of the %d poison events", res.deadLetterEvents, cfg.Poison)
	}
}

// The same seed gives the same workload and the same provider behaviour.
func TestWorkloadIsDeterministic(t *testing.T) {
	cfg := testConfig("unused")
	a, b := workload(cfg), workload(cfg)
	s := newSMTPServer(cfg.Seed)
	for i := range a {
		if a[i].OrderID != b[i].OrderID || a[i].CustomerID != b[i].CustomerID || a[i].poison != b[i].poison ||
			a[i].publishes != b[i].publishes || !bytes.Equal(a[i].body, b[i].body) {
			t.Fatalf("order %d differs between two workloads from seed %d", i, cfg.Seed)
		}
		if s.plan(a[i].OrderID, 1) != s.plan(a[i].OrderID, 1) {
			t.Fatalf("order %s: the provider's plan differs for the same attempt", a[i].OrderID)
		}
	}
}

func TestWithQuery(t *testing.T) {
	cases := []struct {
		raw      string
		override bool
		want     string
	}{
		{"mem://", false, "mem://?group=g&max_attempts=4"},
		{"mem://name?max_attempts=9", false, "mem://name?group=g&max_attempts=9"},
		{"mem://name?max_attempts=9", true, "mem://name?group=g&max_attempts=4"},
		{"amqp://user:p%40ss@host:5672/vhost", false, "amqp://user:p%40ss@host:5672/vhost?group=g&max_attempts=4"},
	}
	for _, c := range cases {
		got, err := withQuery(c.raw, map[string]string{"group": "g", "max_attempts": "4"}, c.override)
		if err != nil || got != c.want {
			t.Errorf("withQuery(%q, override %v) = %q, %v; want %q", c.raw, c.override, got, err, c.want)
		}
	}
	// The consumer URL opens: every parameter the demo adds is one the adapter knows.
	u, err := consumerURL(testConfig("orders-test-url"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := broker.OpenConsumer(context.Background(), u)
	if err != nil {
		t.Fatalf("OpenConsumer(%q): %v", u, err)
	}
	_ = c.Close()
}
