package dedupebench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/redisstore"
	"github.com/brokerkit/broker/idempotency/sqlstore"
	"github.com/brokerkit/broker/internal/testenv"
)

// openRedis connects to the Redis server of internal/testenv, with the
// client's default options, and returns a func that gives each case a store
// under a prefix of its own, after deleting the previous case's keys, so that
// every case starts from the same empty keyspace. The last keys are deleted
// after b.
func openRedis(b *testing.B) func(*testing.B) idempotency.Store {
	opts, err := redis.ParseURL(testenv.RedisURL(b))
	if err != nil {
		b.Fatal(err)
	}
	client := redis.NewClient(opts)
	var prefix string
	b.Cleanup(func() {
		deleteKeys(client, prefix)
		_ = client.Close()
	})
	return func(b *testing.B) idempotency.Store {
		deleteKeys(client, prefix)
		prefix = "brokerkit-bench:" + rand.Text() + ":"
		return redisstore.New(client, &redisstore.Options{KeyPrefix: prefix})
	}
}

// deleteKeys deletes the keys under prefix; an empty prefix means none.
func deleteKeys(client *redis.Client, prefix string) {
	if prefix == "" {
		return
	}
	ctx := context.Background()
	iter := client.Scan(ctx, 0, prefix+"*", 10_000).Iterator()
	keys := make([]string, 0, 1000)
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == cap(keys) {
			client.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		client.Unlink(ctx, keys...)
	}
}

// openPostgres creates a table of its own in the database of internal/testenv,
// dropped after b, and returns a func that empties it for each case. The pool
// holds a connection per handler: the default of two idle connections would
// reconnect all the time.
func openPostgres(b *testing.B) func(*testing.B) idempotency.Store {
	db, err := sql.Open("pgx", testenv.PostgresURL(b))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(*handlers)
	db.SetMaxIdleConns(*handlers)
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
	return func(b *testing.B) idempotency.Store {
		if _, err := db.Exec("TRUNCATE " + table); err != nil {
			b.Fatal(err)
		}
		return s
	}
}
