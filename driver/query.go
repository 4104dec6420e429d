package driver

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/brokerkit/broker"
)

// Query reads URL query parameters strictly: every parameter the adapter does
// not ask for, and every value that does not parse, is an error from Err.
// It is not safe for concurrent use.
type Query struct {
	u    *url.URL
	v    url.Values
	used map[string]bool
	errs []error
}

// NewQuery starts reading u's query.
func NewQuery(u *url.URL) *Query {
	return &Query{u: u, v: u.Query(), used: map[string]bool{}}
}

func (q *Query) get(key string) (string, bool) {
	q.used[key] = true
	vs, ok := q.v[key]
	if !ok {
		return "", false
	}
	if len(vs) > 1 {
		q.errs = append(q.errs, fmt.Errorf("parameter %q given %d times", key, len(vs)))
	}
	return vs[len(vs)-1], true
}

func (q *Query) bad(key, value, want string) {
	q.errs = append(q.errs, fmt.Errorf("parameter %s=%q: want %s", key, value, want))
}

// String returns the parameter, or def when it is absent.
func (q *Query) String(key, def string) string {
	if s, ok := q.get(key); ok {
		return s
	}
	return def
}

// Int returns the parameter as a non-negative integer, or def when absent.
func (q *Query) Int(key string, def int) int {
	s, ok := q.get(key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		q.bad(key, s, "a non-negative integer")
		return def
	}
	return n
}

// Bool returns the parameter as a boolean (true/false/1/0), or def when absent.
func (q *Query) Bool(key string, def bool) bool {
	s, ok := q.get(key)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		q.bad(key, s, "true or false")
		return def
	}
	return b
}

// Duration returns the parameter as a Go duration ("250ms", "5s"), or def.
func (q *Query) Duration(key string, def time.Duration) time.Duration {
	s, ok := q.get(key)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		q.bad(key, s, `a non-negative duration such as "250ms"`)
		return def
	}
	return d
}

// ConsumerOptions returns base with the parameters common to every adapter
// that the query sets put in their place: group, concurrency, order_by_key,
// max_attempts, backoff_min, backoff_max, drain_timeout and
// dead_letter_topic. Giving one of backoff_min and backoff_max replaces
// base.Backoff with an ExponentialBackoff, the other bound at its default.
func (q *Query) ConsumerOptions(base broker.ConsumerOptions) broker.ConsumerOptions {
	o := base
	o.Group = q.String("group", o.Group)
	o.Concurrency = q.Int("concurrency", o.Concurrency)
	o.OrderByKey = q.Bool("order_by_key", o.OrderByKey)
	o.MaxAttempts = q.Int("max_attempts", o.MaxAttempts)
	o.DrainTimeout = q.Duration("drain_timeout", o.DrainTimeout)
	o.DeadLetterTopic = q.String("dead_letter_topic", o.DeadLetterTopic)
	_, hasMin := q.v["backoff_min"]
	_, hasMax := q.v["backoff_max"]
	minD := q.Duration("backoff_min", 100*time.Millisecond)
	maxD := q.Duration("backoff_max", 30*time.Second)
	if hasMin || hasMax {
		if maxD < minD {
			q.errs = append(q.errs, fmt.Errorf("backoff_max %v is below backoff_min %v", maxD, minD))
		}
		o.Backoff = broker.ExponentialBackoff(minD, maxD)
	}
	return o
}

// SkipConsumerOptions reads the common consumer parameters, checking their
// values, and ignores them: a publisher calls it so that one URL (a service's
// BROKER_URL) can open both its publisher and its consumers.
func (q *Query) SkipConsumerOptions() { q.ConsumerOptions(broker.ConsumerOptions{}) }

// Err reports unknown parameters and bad values, wrapping
// broker.ErrInvalidArgument, with credentials redacted from the URL.
func (q *Query) Err() error {
	errs := slices.Clone(q.errs)
	var unknown []string
	for k := range q.v {
		if !q.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		known := make([]string, 0, len(q.used))
		for k := range q.used {
			known = append(known, k)
		}
		slices.Sort(known)
		errs = append(errs, fmt.Errorf("unknown parameter(s) %s (known: %s)",
			strings.Join(unknown, ", "), strings.Join(known, ", ")))
	}
	if len(errs) == 0 {
		return nil
	}
	raw := q.u.String()
	if q.u.Host == "" && !strings.HasPrefix(raw, q.u.Scheme+"://") {
		raw = q.u.Scheme + "://" + strings.TrimPrefix(raw, q.u.Scheme+":") // as written: mem://?x, not mem:?x
	}
	return fmt.Errorf("%s: URL %q: %w: %w", q.u.Scheme, broker.Redact(raw), errors.Join(errs...), broker.ErrInvalidArgument)
}
