package driver_test

import (
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

func TestQueryReadsCommonConsumerOptions(t *testing.T) {
	u, _ := url.Parse("x://h?group=billing&concurrency=8&order_by_key=true&max_attempts=7&backoff_min=5ms&backoff_max=1s&drain_timeout=3s&dead_letter_topic=parked&mine=42")
	q := driver.NewQuery(u)
	o := q.ConsumerOptions(broker.ConsumerOptions{})
	mine := q.Int("mine", 0)
	if err := q.Err(); err != nil {
		t.Fatal(err)
	}
	if o.Group != "billing" || o.Concurrency != 8 || !o.OrderByKey || o.MaxAttempts != 7 ||
		o.DrainTimeout != 3*time.Second || o.DeadLetterTopic != "parked" || o.Backoff == nil || mine != 42 {
		t.Errorf("options = %+v, mine = %d", o, mine)
	}
	if d := o.Backoff(1); d < 2500*time.Microsecond || d > 5*time.Millisecond {
		t.Errorf("backoff(1) = %v, want within [2.5ms, 5ms]", d)
	}
}

func TestQueryRejectsUnknownAndMalformed(t *testing.T) {
	for raw, want := range map[string]string{
		"x://h?concurency=8":                   "unknown parameter(s) concurency",
		"x://h?concurrency=-1":                 "concurrency",
		"x://h?order_by_key=maybe":             "order_by_key",
		"x://h?backoff_min=fast":               "backoff_min",
		"x://h?backoff_min=2s&backoff_max=1s":  "below backoff_min",
		"x://h?group=a&group=b":                "given 2 times",
		"x://u:topsecret@h?sasl_password=pw&z": "unknown parameter(s) z",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		q := driver.NewQuery(u)
		q.ConsumerOptions(broker.ConsumerOptions{})
		q.String("sasl_password", "")
		err = q.Err()
		if !errors.Is(err, broker.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Err() = %v, want ErrInvalidArgument mentioning %q", raw, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "=pw")) {
			t.Errorf("%s: error leaks a secret: %v", raw, err)
		}
	}
}

func TestQueryKeepsBaseOptionsTheURLDoesNotSet(t *testing.T) {
	u, _ := url.Parse("x://h?concurrency=4")
	logger := slog.New(slog.DiscardHandler)
	backoff := broker.ConstantBackoff(time.Millisecond)
	base := broker.ConsumerOptions{Group: "base", Concurrency: 2, MaxAttempts: 9, Logger: logger, Backoff: backoff}
	o := driver.NewQuery(u).ConsumerOptions(base)
	if o.Concurrency != 4 {
		t.Errorf("Concurrency = %d, want the URL's 4", o.Concurrency)
	}
	if o.Group != "base" || o.MaxAttempts != 9 || o.Logger != logger || o.Backoff == nil || o.Backoff(3) != time.Millisecond {
		t.Errorf("options = %+v: the base's group, attempts, logger or backoff were lost", o)
	}
}
