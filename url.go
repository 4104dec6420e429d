package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
)

// EnvURL is the environment variable from which services read their broker URL.
const EnvURL = "BROKER_URL"

// Opener opens publishers and consumers for one URL scheme. Adapters implement
// it and Register it from an init function.
type Opener interface {
	// OpenPublisher opens a publisher for u. It must reject query parameters it
	// does not know with an error wrapping ErrInvalidArgument.
	OpenPublisher(ctx context.Context, u *url.URL) (Publisher, error)
	// OpenConsumer opens a consumer for u with base as its options, each one
	// the query sets (see ConsumerOptions) replacing base's, beside the
	// adapter's own parameters.
	OpenConsumer(ctx context.Context, u *url.URL, base ConsumerOptions) (Consumer, error)
}

// registry is the package's only global state: URL scheme -> Opener.
var registry = struct {
	sync.RWMutex
	openers map[string]Opener
}{openers: map[string]Opener{}}

// Register makes an Opener available under scheme (lower case, without "://").
// It panics if scheme is empty, o is nil, or the scheme is already registered,
// as database/sql.Register does: these are programming errors found at start-up.
func Register(scheme string, o Opener) {
	if scheme == "" || strings.ToLower(scheme) != scheme || strings.ContainsAny(scheme, ":/") {
		panic(fmt.Sprintf("broker: Register of invalid scheme %q", scheme))
	}
	if o == nil {
		panic("broker: Register of nil Opener for scheme " + scheme)
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.openers[scheme]; dup {
		panic("broker: Register called twice for scheme " + scheme)
	}
	registry.openers[scheme] = o
}

// Schemes returns the registered URL schemes, sorted.
func Schemes() []string {
	registry.RLock()
	defer registry.RUnlock()
	s := make([]string, 0, len(registry.openers))
	for k := range registry.openers {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// OpenPublisher opens a Publisher for rawURL with the adapter registered for
// its scheme. An unknown scheme or a malformed URL gives an error wrapping
// ErrInvalidArgument; credentials in the URL never appear in errors.
func OpenPublisher(ctx context.Context, rawURL string) (Publisher, error) {
	o, u, err := lookup(rawURL)
	if err != nil {
		return nil, err
	}
	return o.OpenPublisher(ctx, u)
}

// OpenConsumer opens a Consumer for rawURL, with the ConsumerOptions its query
// sets; see OpenPublisher.
func OpenConsumer(ctx context.Context, rawURL string) (Consumer, error) {
	return OpenConsumerWith(ctx, rawURL, ConsumerOptions{})
}

// OpenConsumerWith opens a Consumer for rawURL with base as its options: the
// settings only code can give (Logger, Backoff, DeadLetterIf) and defaults
// for the rest. Each option the URL's query sets replaces base's, so that
// operators keep the last word through configuration.
func OpenConsumerWith(ctx context.Context, rawURL string, base ConsumerOptions) (Consumer, error) {
	o, u, err := lookup(rawURL)
	if err != nil {
		return nil, err
	}
	return o.OpenConsumer(ctx, u, base)
}

// URLFromEnv returns the value of the BROKER_URL environment variable, or
// fallback when it is unset or empty.
func URLFromEnv(fallback string) string {
	if v := os.Getenv(EnvURL); v != "" {
		return v
	}
	return fallback
}

func lookup(rawURL string) (Opener, *url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL, password included.
		}
		return nil, nil, fmt.Errorf("broker: malformed URL %q: %v: %w", Redact(rawURL), err, ErrInvalidArgument)
	}
	if u.Scheme == "" {
		// Not echoed: a string without a scheme may be a bare secret.
		return nil, nil, fmt.Errorf("broker: URL (%d characters) has no scheme; want scheme://... (registered: %s): %w",
			len(rawURL), strings.Join(Schemes(), ", "), ErrInvalidArgument)
	}
	registry.RLock()
	o := registry.openers[strings.ToLower(u.Scheme)]
	registry.RUnlock()
	if o == nil {
		return nil, nil, fmt.Errorf("broker: unknown URL scheme %q in %q (registered: %s; is the adapter package imported?): %w",
			u.Scheme, Redact(rawURL), strings.Join(Schemes(), ", "), ErrInvalidArgument)
	}
	return o, u, nil
}

// Redact returns rawURL with any password replaced by "xxxxx", and sensitive
// query parameters (secret, password, token, key material) masked, for use in
// errors and logs. A URL that does not parse is cut at its last '@' sign.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		if i := strings.LastIndex(rawURL, "@"); i >= 0 {
			if j := strings.Index(rawURL, "://"); j >= 0 && j < i {
				return rawURL[:j+3] + "xxxxx" + rawURL[i:]
			}
			return "xxxxx" + rawURL[i:]
		}
		return rawURL
	}
	q := u.Query()
	masked := false
	for k, vs := range q {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "secret") || strings.Contains(lk, "password") || strings.Contains(lk, "token") || strings.Contains(lk, "sasl_pass") {
			q.Set(k, "xxxxx")
			masked = true
			continue
		}
		// A parameter whose value is a URL (endpoint=http://user:pw@host)
		// carries its own credentials.
		for i, v := range vs {
			if strings.Contains(v, "@") && strings.Contains(v, "://") {
				if r := Redact(v); r != v {
					vs[i] = r
					masked = true
				}
			}
		}
	}
	if !masked && u.User == nil {
		return rawURL
	}
	if masked {
		u.RawQuery = q.Encode()
	}
	out := u.Redacted()
	if u.Host == "" && strings.HasPrefix(rawURL, u.Scheme+"://") && !strings.HasPrefix(out, u.Scheme+"://") {
		out = u.Scheme + "://" + strings.TrimPrefix(out, u.Scheme+":")
	}
	return out
}
