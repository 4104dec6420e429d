package dedupebench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/redisstore"
	"github.com/brokerkit/broker/idempotency/sqlstore"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The settings every case shares.
const (
	bodySize    = 256
	concurrency = 16 // handlers at once: a store round trip each
	rounds      = 2  // every case runs this many times, interleaved, against the noise of a shared machine
	ttl         = 10 * time.Minute
)

var body = make([]byte, bodySize)

// BenchmarkConsume consumes b.N messages already queued on the in-memory
// broker with a no-op handler: bare, then behind idempotency.Dedupe over each
// store. Each case reports msgs/s and x-bare, its rate over the rate of the
// bare case of the same round.
func BenchmarkConsume(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) idempotency.Store
	}{
		{"memory", func(*testing.B) idempotency.Store { return idempotency.NewMemoryStore(nil) }},
		{"redis", openRedis},
		{"postgres", openPostgres},
		{"sqlite", openSQLite},
	}
	opened := make([]idempotency.Store, len(stores))
	for i, s := range stores {
		opened[i] = s.open(b)
	}
	for range rounds {
		var bare float64
		b.Run("bare", func(b *testing.B) { bare = consume(b, nil, 0) })
		for i, s := range stores {
			b.Run(s.name, func(b *testing.B) {
				dedupe := idempotency.Dedupe(opened[i], &idempotency.DedupeOptions{Namespace: rand.Text(), TTL: ttl})
				consume(b, dedupe, bare)
			})
		}
	}
}

// consume publishes b.N messages to a new topic, then times their
// consumption through mw (nil: none) and returns the rate. With bare, it also
// reports the rate's ratio to it.
func consume(b *testing.B, mw broker.Middleware, bare float64) float64 {
	br, err := membroker.New(&membroker.Options{MaxQueued: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	pub := br.NewPublisher()
	defer pub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batch := make([]*broker.Message, 0, 1000)
	for i := range b.N {
		batch = append(batch, &broker.Message{Body: body})
		if len(batch) == cap(batch) || i == b.N-1 {
			if err := pub.Publish(ctx, "bench", batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	c, err := br.NewConsumer(&broker.ConsumerOptions{Concurrency: concurrency})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var handled atomic.Int64
	done := make(chan struct{})
	var h broker.Handler = func(context.Context, *broker.Message) error { return nil }
	if mw != nil {
		h = mw(h)
	}
	failed := make(chan error, 2)
	counted := func(ctx context.Context, m *broker.Message) error {
		err := h(ctx, m)
		if err != nil {
			select {
			case failed <- err:
			default:
			}
		} else if handled.Add(1) == int64(b.N) {
			close(done)
		}
		return err
	}
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		if err := c.Consume(ctx, "bench", counted); err != nil && ctx.Err() == nil {
			failed <- err
		}
	}()
	select {
	case <-done:
	case err := <-failed:
		b.Fatalf("after %d of %d messages: %v", handled.Load(), b.N, err)
	}
	b.StopTimer()
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "msgs/s")
	if bare > 0 {
		b.ReportMetric(rate/bare, "x-bare")
	}
	return rate
}

func openRedis(b *testing.B) idempotency.Store {
	opts, err := redis.ParseURL(testenv.RedisURL(b))
	if err != nil {
		b.Fatal(err)
	}
	opts.PoolSize = concurrency
	client := redis.NewClient(opts)
	prefix := "brokerkit-bench:" + rand.Text() + ":"
	b.Cleanup(func() {
		ctx := context.Background()
		iter := client.Scan(ctx, 0, prefix+"*", 10_000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			if keys = append(keys, iter.Val()); len(keys) == 1000 {
				client.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			client.Unlink(ctx, keys...)
		}
		_ = client.Close()
	})
	return redisstore.New(client, &redisstore.Options{KeyPrefix: prefix})
}

func openPostgres(b *testing.B) idempotency.Store {
	db, err := sql.Open("pgx", testenv.PostgresURL(b))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(concurrency)
	db.SetMaxIdleConns(concurrency) // the default of 2 would reconnect all the time
	return openSQL(b, db)
}

// openSQLite opens a WAL database with synchronous=NORMAL (durable across a
// process crash, not a power cut) and one connection: SQLite has one writer,
// and queueing in database/sql beats SQLite's busy-wait sleeps.
func openSQLite(b *testing.B) idempotency.Store {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(b.TempDir(), "bench.db")+
		"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return openSQL(b, db)
}

// openSQL creates a table of its own in db, dropped after b.
func openSQL(b *testing.B, db *sql.DB) idempotency.Store {
	table := "brokerkit_bench_" + strings.ToLower(rand.Text())
	s, err := sqlstore.New(db, &sqlstore.Options{Table: table})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.CreateTable(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = db.Exec("DROP TABLE " + table)
		_ = db.Close()
	})
	return s
}
