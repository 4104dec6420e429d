package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/sqlstore"
	"github.com/brokerkit/broker/idempotency/storetest"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// postgres opens the test database and closes it after t.
func postgres(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// sqliteDSN is a WAL database file in dir whose transactions take the write
// lock when they begin, and whose writers wait for each other.
func sqliteDSN(dir string) string {
	return "file:" + filepath.Join(dir, "test.db") +
		"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
}

// sqlite opens a new database file, in WAL mode before it returns, and
// closes it after t. With one, the pool has a single connection.
func sqlite(t *testing.T, one bool) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteDSN(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	// One connection switches the new file to WAL (see the package doc):
	// connections that race that switch get SQLITE_BUSY at once
	// (TestCreateTableConcurrently failed so in 2 runs of 60).
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	if one {
		db.SetMaxOpenConns(1)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// newStore creates a store with a table of its own, dropped after t.
func newStore(t *testing.T, db *sql.DB, now func() time.Time) *sqlstore.Store {
	t.Helper()
	table := "brokerkit_test_" + strings.ToLower(rand.Text())
	s, err := sqlstore.New(db, &sqlstore.Options{Table: table, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.Exec("DROP TABLE " + table) })
	return s
}

func TestPostgreSQL(t *testing.T) {
	db := postgres(t)
	t.Run("database clock", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{
			NewStore:    func(t *testing.T, _ func() time.Time) idempotency.Store { return newStore(t, db, nil) },
			ServerClock: true,
		})
	})
	t.Run("process clock", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{
			NewStore: func(t *testing.T, now func() time.Time) idempotency.Store { return newStore(t, db, now) },
		})
	})
}

func TestSQLite(t *testing.T) {
	for _, one := range []bool{false, true} {
		name := map[bool]string{false: "WAL pool", true: "one connection"}[one]
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, storetest.Harness{
				NewStore: func(t *testing.T, now func() time.Time) idempotency.Store {
					return newStore(t, sqlite(t, one), now)
				},
			})
		})
	}
}

func TestNew(t *testing.T) {
	lite := sqlite(t, false)
	pg, err := sql.Open("pgx", "postgres://nobody@127.0.0.1:1/none") // never connected
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	for _, tc := range []struct {
		name string
		db   *sql.DB
		opts *sqlstore.Options
		want sqlstore.Dialect // 0: an error wrapping ErrInvalidArgument
	}{
		{"detect SQLite", lite, nil, sqlstore.SQLite},
		{"detect PostgreSQL", pg, nil, sqlstore.PostgreSQL},
		{"dialect set", lite, &sqlstore.Options{Dialect: sqlstore.PostgreSQL}, sqlstore.PostgreSQL},
		{"schema.table", pg, &sqlstore.Options{Table: "jobs.seen_messages"}, sqlstore.PostgreSQL},
		{"nil db", nil, nil, 0},
		{"table with a quote", lite, &sqlstore.Options{Table: `t"; DROP TABLE x; --`}, 0},
		{"table starting with a digit", lite, &sqlstore.Options{Table: "1t"}, 0},
		{"table with two dots", lite, &sqlstore.Options{Table: "a.b.c"}, 0},
		{"unknown dialect", lite, &sqlstore.Options{Dialect: 7}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sqlstore.New(tc.db, tc.opts)
			switch {
			case tc.want == 0 && !errors.Is(err, broker.ErrInvalidArgument):
				t.Fatalf("New = %v, want an error wrapping ErrInvalidArgument", err)
			case tc.want != 0 && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != 0 && s.Dialect() != tc.want:
				t.Fatalf("Dialect = %v, want %v", s.Dialect(), tc.want)
			}
		})
	}
}

// CreateTable may run again, and from several goroutines at once.
func TestCreateTableConcurrently(t *testing.T) {
	for name, db := range map[string]*sql.DB{"PostgreSQL": postgres(t), "SQLite": sqlite(t, false)} {
		t.Run(name, func(t *testing.T) {
			table := "brokerkit_test_" + strings.ToLower(rand.Text())
			t.Cleanup(func() { _, _ = db.Exec("DROP TABLE " + table) })
			s, err := sqlstore.New(db, &sqlstore.Options{Table: table})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Go(func() { errs[i] = s.CreateTable(context.Background()) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateTable(context.Background()); err != nil {
				t.Fatalf("CreateTable again: %v", err)
			}
		})
	}
}

// Without its table, the store fails with ErrNotFound, never with a state.
func TestMissingTable(t *testing.T) {
	for name, db := range map[string]*sql.DB{"PostgreSQL": postgres(t), "SQLite": sqlite(t, false)} {
		t.Run(name, func(t *testing.T) {
			s, err := sqlstore.New(db, &sqlstore.Options{Table: "brokerkit_test_never_created"})
			if err != nil {
				t.Fatal(err)
			}
			c, err := s.Claim(context.Background(), "k", time.Minute)
			if !errors.Is(err, broker.ErrNotFound) || c.State != 0 {
				t.Fatalf("Claim = %v, %v; want no state and an error wrapping ErrNotFound", c.State, err)
			}
		})
	}
}

// Purge deletes expired claims and Done records, and keeps the live ones.
func TestPurge(t *testing.T) {
	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	for name, db := range map[string]*sql.DB{"PostgreSQL": postgres(t), "SQLite": sqlite(t, false)} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t, db, clock.Now)
			ctx := context.Background()
			claim := func(key string, lease time.Duration) idempotency.Claim {
				t.Helper()
				c, err := s.Claim(ctx, key, lease)
				if err != nil || c.State != idempotency.Claimed {
					t.Fatalf("Claim(%q) = %v, %v", key, c.State, err)
				}
				return c
			}
			claim("expiring claim", time.Minute)
			claim("live claim", time.Hour)
			if err := s.Complete(ctx, claim("expiring done", time.Hour), time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := s.Complete(ctx, claim("live done", time.Hour), time.Hour); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Minute)
			if n, err := s.Purge(ctx); err != nil || n != 2 {
				t.Fatalf("Purge = %d, %v; want 2 records deleted", n, err)
			}
			if n, err := s.Purge(ctx); err != nil || n != 0 {
				t.Fatalf("second Purge = %d, %v; want 0", n, err)
			}
			for key, want := range map[string]idempotency.State{
				"live claim": idempotency.InProgress, "live done": idempotency.Done,
				"expiring claim": idempotency.Claimed, "expiring done": idempotency.Claimed,
			} {
				if c, err := s.Claim(ctx, key, time.Hour); err != nil || c.State != want {
					t.Errorf("Claim(%q) after Purge = %v, %v; want %v", key, c.State, err, want)
				}
			}
		})
	}
}

// A database that cannot be reached gives an error, never a Claim state.
func TestOutage(t *testing.T) {
	closedPG := postgres(t)
	_ = closedPG.Close()
	closedLite := sqlite(t, false)
	_ = closedLite.Close()
	down, err := sql.Open("pgx", "postgres://brokerkit@127.0.0.1:1/brokerkit?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	for _, tc := range []struct {
		name string
		db   *sql.DB
		want error
	}{
		{"PostgreSQL closed port", down, broker.ErrUnavailable},
		{"PostgreSQL closed *sql.DB", closedPG, broker.ErrClosed},
		{"SQLite closed *sql.DB", closedLite, broker.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sqlstore.New(tc.db, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			c, err := s.Claim(ctx, "order-1", time.Minute)
			if !errors.Is(err, tc.want) || c.State != 0 {
				t.Fatalf("Claim = %v, %v; want no state and an error wrapping %v", c.State, err, tc.want)
			}
			if strings.Contains(err.Error(), "brokerkit:brokerkit") {
				t.Errorf("the error shows the password: %v", err)
			}
			owned := idempotency.Claim{Key: "order-1", Token: "t", State: idempotency.Claimed}
			if err := s.Complete(ctx, owned, time.Hour); !errors.Is(err, tc.want) {
				t.Errorf("Complete = %v, want an error wrapping %v", err, tc.want)
			}
			if err := s.Release(ctx, owned); !errors.Is(err, tc.want) {
				t.Errorf("Release = %v, want an error wrapping %v", err, tc.want)
			}
			h := idempotency.Dedupe(s, nil)(func(context.Context, *broker.Message) error {
				t.Error("the handler ran while the store was down")
				return nil
			})
			if err := h(ctx, &broker.Message{ID: "order-1"}); err == nil || broker.IsPermanent(err) {
				t.Errorf("Dedupe = %v, want a retryable error", err)
			}
		})
	}
}

// fakeClock is a clock that tests move by hand; safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
