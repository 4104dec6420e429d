package redisstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// DefaultKeyPrefix is put before every key when Options.KeyPrefix is empty.
const DefaultKeyPrefix = "brokerkit:idempotency:"

// The values a key holds: the prefix, then the owner's token.
const (
	claimedPrefix = "claimed:"
	donePrefix    = "done:"
)

// Defaults of Options.
const (
	// DefaultMaxBatch is the most calls a Store sends in one round trip when
	// Options.MaxBatch is zero.
	DefaultMaxBatch = 64
	// DefaultMaxInFlight is the most round trips a Store has in flight at once
	// when Options.MaxInFlight is zero.
	DefaultMaxInFlight = 4
)

// Options configure a Store. The zero value is valid.
type Options struct {
	// KeyPrefix is put before every idempotency key to form the Redis key, so
	// that the records of several stores, or of other applications, do not
	// collide in one database. Empty means DefaultKeyPrefix.
	KeyPrefix string
	// MaxBatch is the most calls that the Store sends in one pipelined round
	// trip; calls beyond it wait for the next one. Zero means DefaultMaxBatch;
	// one sends every call on its own.
	MaxBatch int
	// MaxInFlight is the most round trips that the Store has in flight at
	// once, each on a connection of its own; calls made while that many are
	// in flight queue, and go together in the next. One gives the fewest
	// round trips and the most waiting; zero means DefaultMaxInFlight.
	MaxInFlight int
}

// Store is an idempotency.Store in Redis, shared by every process that uses
// the same server (or cluster) and KeyPrefix. It is safe for concurrent use,
// and concurrent calls share round trips (see the package doc); it holds no
// goroutine of its own, so it needs no Close. Leases and TTLs are measured on
// the Redis server's clock, as key expiry.
type Store struct {
	client      redis.UniversalClient
	prefix      string
	maxBatch    int
	maxInFlight int
	calls       sync.Pool // of *call, reused once their caller has its answer

	mu      sync.Mutex
	senders int     // callers sending a batch or told to send one, at most maxInFlight
	queue   []*call // the calls waiting for a batch, oldest first
}

var _ idempotency.Store = (*Store)(nil)

// New returns a Store that keeps its records in client; nil opts means the
// defaults. The Store does not own client: closing it is the caller's job. New
// panics if client is nil or opts.MaxBatch or opts.MaxInFlight is negative,
// programming errors.
func New(client redis.UniversalClient, opts *Options) *Store {
	if client == nil {
		panic("redisstore: New with a nil client")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.MaxBatch < 0 {
		panic(fmt.Sprintf("redisstore: New: Options.MaxBatch %d is negative", o.MaxBatch))
	}
	if o.MaxInFlight < 0 {
		panic(fmt.Sprintf("redisstore: New: Options.MaxInFlight %d is negative", o.MaxInFlight))
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	s := &Store{client: client, prefix: o.KeyPrefix, maxBatch: o.MaxBatch, maxInFlight: o.MaxInFlight}
	s.calls.New = func() any { return &call{wake: make(chan bool, 1)} }
	return s
}

// claimScript takes KEYS[1] with SET NX PX, so that the value ARGV[1]
// ("claimed:<token>") expires with the lease of ARGV[2] milliseconds. When the
// key exists, it reports whether its value is a claim or a Done record. It
// returns 1 (Claimed), 2 (InProgress) or 3 (Done).
var claimScript = newScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return 1
end
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 5) == 'done:' then
	return 3
end
return 2
`)

// completeScript replaces the claim "claimed:<ARGV[1]>" of KEYS[1] with
// "done:<ARGV[1]>" expiring in ARGV[2] milliseconds. It returns 1 when it did,
// 2 when the key is already done by this token, and otherwise a refusal code.
var completeScript = newScript(`
local v = redis.call('GET', KEYS[1])
if v == 'claimed:' .. ARGV[1] then
	redis.call('SET', KEYS[1], 'done:' .. ARGV[1], 'PX', ARGV[2])
	return 1
end` + refusal)

// releaseScript deletes KEYS[1] if it holds the claim "claimed:<ARGV[1]>". It
// returns 1 when it did, and otherwise a refusal code.
var releaseScript = newScript(`
local v = redis.call('GET', KEYS[1])
if v == 'claimed:' .. ARGV[1] then
	redis.call('DEL', KEYS[1])
	return 1
end` + refusal)

// refusal ends completeScript and releaseScript for a value v that is not
// the claim of token ARGV[1]: 2 when it is that token's Done, 0 when the key
// is gone, -2 when another token's Done, -1 when another token's claim.
const refusal = `
if v == 'done:' .. ARGV[1] then
	return 2
end
if not v then
	return 0
end
if string.sub(v, 1, 5) == 'done:' then
	return -2
end
return -1
`

// Claim implements idempotency.Store with one script run: SET NX PX, and a GET
// when the key is taken. If ctx ends while the call waits for its batch, Claim
// returns ctx.Err() and nothing is sent; if the script was sent already, it
// still runs, and a key it claimed stays claimed until the lease expires.
func (s *Store) Claim(ctx context.Context, key string, lease time.Duration) (idempotency.Claim, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Claim{}, err
	}
	if key == "" {
		return idempotency.Claim{}, fmt.Errorf("redisstore: claim: empty key: %w", broker.ErrInvalidArgument)
	}
	if lease <= 0 {
		return idempotency.Claim{}, fmt.Errorf("redisstore: claim %q: lease %v is not positive: %w", key, lease, broker.ErrInvalidArgument)
	}
	token := rand.Text()
	n, err := s.run(ctx, claimScript, s.prefix+key, claimedPrefix+token, millis(lease))
	if err != nil {
		return idempotency.Claim{}, s.wrap(ctx, "claim", key, err)
	}
	switch n {
	case 1:
		return idempotency.Claim{Key: key, Token: token, State: idempotency.Claimed}, nil
	case 2:
		return idempotency.Claim{Key: key, State: idempotency.InProgress}, nil
	case 3:
		return idempotency.Claim{Key: key, State: idempotency.Done}, nil
	}
	return idempotency.Claim{}, fmt.Errorf("redisstore: claim %q: the claim script answered %d", key, n)
}

// Complete implements idempotency.Store. It turns the claim into a Done record
// whose expiry is ttl, in one script run that compares the owner's token. If
// ctx ends after the script was sent, Complete returns ctx.Err() although the
// key may be done; completing it again is harmless.
func (s *Store) Complete(ctx context.Context, c idempotency.Claim, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkOwned("complete", c); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("redisstore: complete %q: TTL %v is not positive: %w", c.Key, ttl, broker.ErrInvalidArgument)
	}
	n, err := s.run(ctx, completeScript, s.prefix+c.Key, c.Token, millis(ttl))
	if err != nil {
		return s.wrap(ctx, "complete", c.Key, err)
	}
	if n == 1 || n == 2 { // 2: completed by this claim already
		return nil
	}
	return refused("complete", c.Key, n)
}

// Release implements idempotency.Store. It deletes the key if c still holds
// it, in one script run that compares the owner's token. If ctx ends after the
// script was sent, Release returns ctx.Err() although the key may be released.
func (s *Store) Release(ctx context.Context, c idempotency.Claim) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkOwned("release", c); err != nil {
		return err
	}
	n, err := s.run(ctx, releaseScript, s.prefix+c.Key, c.Token, 0)
	if err != nil {
		return s.wrap(ctx, "release", c.Key, err)
	}
	if n == 1 {
		return nil
	}
	return refused("release", c.Key, n)
}

// refused turns a script's refusal code into an error wrapping ErrNotOwner.
func refused(op, key string, code int64) error {
	var why string
	switch code {
	case 0:
		why = "the key is not claimed (lease expired or released)"
	case -1:
		why = "another owner claimed the key"
	case -2:
		why = "another owner completed the key"
	case 2:
		why = "the key is already completed"
	default:
		return fmt.Errorf("redisstore: %s %q: the %s script answered %d", op, key, op, code)
	}
	return fmt.Errorf("redisstore: %s %q: %s: %w", op, key, why, idempotency.ErrNotOwner)
}

// checkOwned rejects claims that never owned their key.
func checkOwned(op string, c idempotency.Claim) error {
	if c.Key == "" || c.State != idempotency.Claimed || c.Token == "" {
		return fmt.Errorf("redisstore: %s %q: the claim is %v, not an owned Claimed one: %w", op, c.Key, c.State, broker.ErrInvalidArgument)
	}
	return nil
}

// millis is d in whole milliseconds for PX, rounded up so that a positive
// duration never becomes zero. The client writes the integer into the
// command without formatting it in a string first.
func millis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
