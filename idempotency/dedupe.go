package idempotency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/internal/deadline"
)

// settleTries is how many times Dedupe tries Complete or Release before it
// gives up and logs; settleWait is the pause after the first failure, doubled
// after each further one.
const (
	settleTries = 3
	settleWait  = 50 * time.Millisecond
)

// DedupeOptions configure Dedupe. The zero value is valid.
type DedupeOptions struct {
	// Key returns a message's idempotency key. Nil means Message.ID, which is
	// kept across redeliveries. An empty key fails the message permanently.
	Key func(*broker.Message) string
	// Namespace, when set, is put before every key as "<namespace>:<key>". Set
	// it whenever services or consumer groups share one Store: otherwise the
	// first to complete a message makes the others skip it.
	Namespace string
	// Lease is how long a claim keeps others off a key while the handler runs;
	// a crashed worker's key is free again after it. Make it longer than the
	// handler can take (bound the handler with middleware.Timeout). Zero means
	// 5 minutes.
	Lease time.Duration
	// TTL is how long a completed key is remembered; a duplicate that arrives
	// later runs again. Make it longer than the broker's redelivery horizon.
	// Zero means 24 hours.
	TTL time.Duration
	// SettleTimeout bounds the Complete or Release after the handler returned,
	// which run even when the handler's context has ended. The deadline is
	// rounded up by at most a sixteenth of it, so that the settles of many
	// messages share one timer; a MemoryStore, which never waits, gets none.
	// Zero means 10s.
	SettleTimeout time.Duration
	// Logger receives what Dedupe cannot return: a Complete or Release that
	// failed. Nil means slog.Default().
	Logger *slog.Logger
}

// Dedupe runs the handler at most once at a time per key and skips keys that
// were already handled, using store; nil opts means the defaults. For each
// message it claims the key for opts.Lease, then:
//
//   - Done: the message was handled before. Dedupe returns nil without calling
//     the handler, so the duplicate is acknowledged.
//   - InProgress: another worker is handling it now. Dedupe returns an error
//     wrapping ErrInProgress without calling the handler. The error is
//     retryable, not broker.Permanent: the consumer redelivers the message after
//     its backoff, when the other worker has finished. Each such redelivery uses
//     one of the consumer's MaxAttempts; a copy that runs out of attempts this
//     way is dead-lettered with ErrInProgress as its reason (a redrive of it is
//     skipped as Done once the other worker completed), unless the consumer's
//     ConsumerOptions.DeadLetterIf refuses errors wrapping ErrInProgress, which
//     keeps such copies retrying until the other worker ends. A consumer with
//     OrderByKey never runs two copies of one message (same Key) at once, so it
//     meets InProgress only from other consumers.
//   - Claimed: the handler runs. When it returns nil, Dedupe marks the key
//     Complete for opts.TTL. When it returns an error or panics, Dedupe
//     Releases the key, so that the redelivery (or a redrive from the
//     dead-letter topic) runs the handler again, and returns the handler's
//     error unchanged (or lets the panic continue).
//
// Complete and Release run with a context that is not cancelled with the
// handler's (bounded by opts.SettleTimeout), and are tried up to three times.
//
// If Complete still fails, Dedupe logs the failure and returns nil: the side
// effect has happened, so the message is acknowledged. Returning an error
// instead would be worse on every path: the redelivery would find the key
// still claimed and be refused with ErrInProgress until the lease expired,
// using up attempts until the message is dead-lettered though handled, or
// claim it after the lease and run the side effect a second time. Acking risks
// a second run only if another copy of the message arrives later. The same
// reasoning applies when Complete fails with ErrNotOwner because the handler
// outlived its lease: another worker may be running it already, and nothing
// that Dedupe returns can undo that; the log says to lengthen the lease.
//
// If Release fails, the handler's error is still returned and the failure
// logged; the key stays claimed until its lease expires.
//
// An error from Claim is returned (wrapped; permanent if it wraps
// broker.ErrInvalidArgument), and the handler is not called: a store outage
// delays messages, it never lets duplicates through. Dedupe panics if store
// is nil or a duration in opts is negative.
func Dedupe(store Store, opts *DedupeOptions) broker.Middleware {
	if store == nil {
		panic("idempotency: Dedupe with a nil Store")
	}
	d := &dedupe{store: store}
	if opts != nil {
		d.opts = *opts
	}
	d.opts = d.opts.WithDefaults()
	if _, inProcess := store.(*MemoryStore); !inProcess {
		d.deadlines = deadline.NewShared(context.Background(), d.opts.SettleTimeout)
	}
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m *broker.Message) error {
			return d.handle(ctx, m, next)
		}
	}
}

// WithDefaults returns o with each zero field set to its documented default.
// It panics if a duration is negative.
func (o DedupeOptions) WithDefaults() DedupeOptions {
	for name, v := range map[string]time.Duration{"Lease": o.Lease, "TTL": o.TTL, "SettleTimeout": o.SettleTimeout} {
		if v < 0 {
			panic(fmt.Sprintf("idempotency: DedupeOptions.%s %v is negative", name, v))
		}
	}
	if o.Key == nil {
		o.Key = func(m *broker.Message) string { return m.ID }
	}
	if o.Lease == 0 {
		o.Lease = 5 * time.Minute
	}
	if o.TTL == 0 {
		o.TTL = 24 * time.Hour
	}
	if o.SettleTimeout == 0 {
		o.SettleTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

type dedupe struct {
	store     Store
	opts      DedupeOptions
	deadlines *deadline.Shared // nil for a MemoryStore, which never waits on I/O
}

func (d *dedupe) handle(ctx context.Context, m *broker.Message, next broker.Handler) error {
	c, done, err := ClaimMessage(ctx, d.store, d.opts, m)
	if done || err != nil {
		return err
	}

	returned := false
	defer func() {
		if !returned { // the handler panicked: free the key, let the panic go on
			d.settle(ctx, m, c, false)
		}
	}()
	herr := next(ctx, m)
	returned = true
	d.settle(ctx, m, c, herr == nil)
	return herr
}

// ClaimMessage claims m's key in store the way Dedupe does, for middleware
// built on a Store (sqlstore.DedupeTx): the key is opts.Key(m), prefixed by
// opts.Namespace and ":" when set, claimed for opts.Lease (opts with
// defaults applied). It returns the claim when the handler should run; done
// when the key is Done, so the message is to be acknowledged unhandled; and
// otherwise an error: ctx's, one wrapping ErrInProgress (retry later), the
// store's (permanent when it wraps broker.ErrInvalidArgument, as an empty key
// does).
func ClaimMessage(ctx context.Context, store Store, opts DedupeOptions, m *broker.Message) (c Claim, done bool, err error) {
	key := opts.Key(m)
	if key == "" {
		return Claim{}, false, broker.Permanent(fmt.Errorf("idempotency: message %q has an empty idempotency key: %w", m.ID, broker.ErrInvalidArgument))
	}
	if opts.Namespace != "" {
		key = opts.Namespace + ":" + key
	}
	c, err = store.Claim(ctx, key, opts.Lease)
	switch {
	case err != nil && ctx.Err() != nil:
		return Claim{}, false, ctx.Err()
	case err != nil:
		err = fmt.Errorf("idempotency: message %s: %w", m.ID, err)
		if errors.Is(err, broker.ErrInvalidArgument) {
			return Claim{}, false, broker.Permanent(err)
		}
		return Claim{}, false, err
	case c.State == Done:
		return c, true, nil
	case c.State == InProgress:
		return c, false, fmt.Errorf("%w: message %s (key %q)", ErrInProgress, m.ID, key)
	case c.State != Claimed:
		return c, false, fmt.Errorf("idempotency: message %s: claim %q: the store answered %v, which is not a Claim state", m.ID, key, c.State)
	}
	return c, false, nil
}

// RetrySettle retries op, a Complete or Release of a claim that failed with
// err, as Dedupe does: up to settleTries attempts in all, pausing 50ms and
// then twice as long before each, while the error may pass (not ErrNotOwner,
// not broker.ErrInvalidArgument) and ctx lasts. It returns the last error.
// It is for middleware built on a Store, such as sqlstore.DedupeTx.
func RetrySettle(ctx context.Context, err error, op func(context.Context) error) error {
	for try, pause := 2, settleWait; err != nil && try <= settleTries; try, pause = try+1, 2*pause {
		if errors.Is(err, ErrNotOwner) || errors.Is(err, broker.ErrInvalidArgument) {
			break
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
		err = op(ctx)
	}
	return err
}

// settle completes c when the handler succeeded and releases it otherwise,
// logging what could not be done.
func (d *dedupe) settle(ctx context.Context, m *broker.Message, c Claim, complete bool) {
	var sctx context.Context
	if d.deadlines != nil {
		sctx = d.deadlines.WithValuesOf(ctx)
	} else {
		sctx = context.WithoutCancel(ctx) // no deadline to read the clock for: the store does not block
	}
	var err error
	if complete {
		err = d.store.Complete(sctx, c, d.opts.TTL)
	} else {
		err = d.store.Release(sctx, c)
	}
	if err != nil { // the closure is made on this path only: none per message
		err = RetrySettle(sctx, err, func(ctx context.Context) error {
			if complete {
				return d.store.Complete(ctx, c, d.opts.TTL)
			}
			return d.store.Release(ctx, c)
		})
	}
	switch {
	case err == nil:
	case complete && errors.Is(err, ErrNotOwner):
		d.opts.Logger.Error("idempotency: the handler outlived its claim's lease; another delivery may have run it too; make DedupeOptions.Lease longer than the handler can take",
			"id", m.ID, "key", c.Key, "lease", d.opts.Lease, "error", err)
	case complete:
		d.opts.Logger.Error("idempotency: could not mark the message done; it was handled and is acknowledged, but a copy that arrives after the lease would run again",
			"id", m.ID, "key", c.Key, "error", err)
	case errors.Is(err, ErrNotOwner):
		d.opts.Logger.Warn("idempotency: the failed handler outlived its claim's lease",
			"id", m.ID, "key", c.Key, "lease", d.opts.Lease, "error", err)
	default:
		d.opts.Logger.Warn("idempotency: could not release the claim; redeliveries are refused with ErrInProgress until its lease expires",
			"id", m.ID, "key", c.Key, "lease", d.opts.Lease, "error", err)
	}
}
