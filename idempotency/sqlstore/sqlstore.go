package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// DefaultTable is the table's name when Options.Table is empty.
const DefaultTable = "brokerkit_idempotency"

// Dialect is the SQL database a Store talks to.
type Dialect int

const (
	// DetectDialect, the zero value, asks New to tell the dialect from the
	// type of the *sql.DB's driver.
	DetectDialect Dialect = iota
	// PostgreSQL 9.5 or later (INSERT ... ON CONFLICT), with the pgx stdlib
	// driver ("pgx") or lib/pq ("postgres").
	PostgreSQL
	// SQLite 3.35 or later (RETURNING), with modernc.org/sqlite ("sqlite") or
	// another database/sql driver.
	SQLite
)

func (d Dialect) String() string {
	switch d {
	case DetectDialect:
		return "DetectDialect"
	case PostgreSQL:
		return "PostgreSQL"
	case SQLite:
		return "SQLite"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// Options configure a Store. The zero value is valid.
type Options struct {
	// Table names the table of records, optionally qualified by a schema
	// ("schema.table"); each part is a letter or underscore followed by
	// letters, digits and underscores. Empty means DefaultTable.
	Table string
	// Dialect says which database the *sql.DB is connected to. DetectDialect
	// means that New tells it from the driver: the pgx stdlib and lib/pq
	// drivers are PostgreSQL, modernc.org/sqlite, mattn/go-sqlite3 and
	// ncruces/go-sqlite3 are SQLite.
	Dialect Dialect
	// Now is the clock that leases and TTLs are measured on, read in the
	// process and sent with each statement. Nil means the database's clock on
	// PostgreSQL (statement_timestamp(), one clock for every worker, whatever
	// theirs say), and time.Now on SQLite, whose database is a file on the
	// machine of every process that opens it. Set it on PostgreSQL only when
	// every worker's clock is trusted to agree, or in tests.
	Now func() time.Time
}

// Store is an idempotency.Store in a table of a PostgreSQL or SQLite database,
// shared by every process that uses the same database and table. It is safe
// for concurrent use. Create the table with CreateTable, or with the
// statement it runs, before the first Claim.
type Store struct {
	db      *sql.DB
	dialect Dialect
	table   string
	now     func() time.Time // nil: the database's clock
	sql     statements
}

var _ idempotency.Store = (*Store)(nil)

// tableName is what Options.Table may be.
var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// New returns a Store of the records in db; nil opts means the defaults. It
// returns an error wrapping broker.ErrInvalidArgument when db is nil, the
// table's name is not a plain identifier, or the dialect is unknown or cannot
// be detected. New does not touch the database; the Store does not own db.
func New(db *sql.DB, opts *Options) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("sqlstore: New with a nil *sql.DB: %w", broker.ErrInvalidArgument)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if !tableName.MatchString(o.Table) {
		return nil, fmt.Errorf("sqlstore: Options.Table %q is not an identifier or schema.identifier: %w", o.Table, broker.ErrInvalidArgument)
	}
	switch o.Dialect {
	case DetectDialect:
		o.Dialect = detect(db)
		if o.Dialect == DetectDialect {
			return nil, fmt.Errorf("sqlstore: cannot tell the dialect of driver %T; set Options.Dialect: %w", db.Driver(), broker.ErrInvalidArgument)
		}
	case PostgreSQL, SQLite:
	default:
		return nil, fmt.Errorf("sqlstore: Options.Dialect %v is unknown: %w", o.Dialect, broker.ErrInvalidArgument)
	}
	now := o.Now
	if now == nil && o.Dialect == SQLite {
		now = time.Now
	}
	s := &Store{db: db, dialect: o.Dialect, table: o.Table, now: now}
	s.sql = s.statements()
	return s, nil
}

// detect tells the dialect from the package of db's driver.
func detect(db *sql.DB) Dialect {
	t := reflect.TypeOf(db.Driver())
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch pkg := t.PkgPath(); {
	case strings.Contains(pkg, "jackc/pgx"), strings.HasSuffix(pkg, "lib/pq"):
		return PostgreSQL
	case strings.Contains(pkg, "sqlite"):
		return SQLite
	}
	return DetectDialect
}

// DB returns the database the store's table is in.
func (s *Store) DB() *sql.DB { return s.db }

// Dialect returns the store's dialect, detected or set.
func (s *Store) Dialect() Dialect { return s.dialect }

// CreateTable creates the store's table and its index on expires_at if they
// do not exist. It is safe to call from several processes at once.
func (s *Store) CreateTable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(ctx, "create table", "", err)
	}
	defer tx.Rollback()
	if s.dialect == PostgreSQL {
		// Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog;
		// take turns.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, s.table); err != nil {
			return s.wrap(ctx, "create table", "", err)
		}
	}
	for _, stmt := range s.sql.create {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return s.wrap(ctx, "create table", "", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(ctx, "create table", "", err)
	}
	return nil
}

// Claim implements idempotency.Store with one INSERT ... ON CONFLICT DO UPDATE
// statement: a new key, or one whose lease or TTL expired, is taken; a live
// record is left as it was. RETURNING tells which happened.
func (s *Store) Claim(ctx context.Context, key string, lease time.Duration) (idempotency.Claim, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Claim{}, err
	}
	if key == "" {
		return idempotency.Claim{}, fmt.Errorf("sqlstore: claim: empty key: %w", broker.ErrInvalidArgument)
	}
	if lease <= 0 {
		return idempotency.Claim{}, fmt.Errorf("sqlstore: claim %q: lease %v is not positive: %w", key, lease, broker.ErrInvalidArgument)
	}
	token := rand.Text()
	var got, state string
	err := s.db.QueryRowContext(ctx, s.sql.claim, s.args([]byte(key), token, micros(lease))...).Scan(&got, &state)
	if err != nil {
		return idempotency.Claim{}, s.wrap(ctx, "claim", key, err)
	}
	switch {
	case got == token:
		return idempotency.Claim{Key: key, Token: token, State: idempotency.Claimed}, nil
	case state == stateDone:
		return idempotency.Claim{Key: key, State: idempotency.Done}, nil
	case state == stateClaimed:
		return idempotency.Claim{Key: key, State: idempotency.InProgress}, nil
	}
	return idempotency.Claim{}, fmt.Errorf("sqlstore: claim %q: the record's state is %q", key, state)
}

// Complete implements idempotency.Store: it marks c's key done for ttl, in its
// own statement. To mark it done in the transaction of the side effect, use
// CompleteTx.
func (s *Store) Complete(ctx context.Context, c idempotency.Claim, ttl time.Duration) error {
	return s.complete(ctx, s.db, c, ttl)
}

// CompleteTx is Complete within tx, a transaction on the store's database:
// the key is Done if and only if tx commits, together with whatever else tx
// wrote. Committing the rows of a side effect and its Done record at once
// gives exactly-once effects in that database (DedupeTx does it around a
// handler). CompleteTx fails with ErrNotOwner, and tx should then be rolled
// back, when c no longer holds its key. Until tx ends, it holds a lock on the
// key's record: other Claims of the key wait for the outcome.
func (s *Store) CompleteTx(ctx context.Context, tx *sql.Tx, c idempotency.Claim, ttl time.Duration) error {
	if tx == nil {
		return fmt.Errorf("sqlstore: complete %q: nil *sql.Tx: %w", c.Key, broker.ErrInvalidArgument)
	}
	return s.complete(ctx, tx, c, ttl)
}

func (s *Store) complete(ctx context.Context, q querier, c idempotency.Claim, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkOwned("complete", c); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("sqlstore: complete %q: TTL %v is not positive: %w", c.Key, ttl, broker.ErrInvalidArgument)
	}
	res, err := q.ExecContext(ctx, s.sql.complete, s.args([]byte(c.Key), c.Token, micros(ttl))...)
	if err != nil {
		return s.wrap(ctx, "complete", c.Key, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.wrap(ctx, "complete", c.Key, err)
	} else if n == 1 {
		return nil
	}
	return s.refused(ctx, q, "complete", c)
}

// Release implements idempotency.Store: it deletes c's claim.
func (s *Store) Release(ctx context.Context, c idempotency.Claim) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkOwned("release", c); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.sql.release, s.args([]byte(c.Key), c.Token)...)
	if err != nil {
		return s.wrap(ctx, "release", c.Key, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.wrap(ctx, "release", c.Key, err)
	} else if n == 1 {
		return nil
	}
	return s.refused(ctx, s.db, "release", c)
}

// Purge deletes the records whose lease or TTL has expired and returns how
// many it deleted. Expired records are harmless, and a Claim of their key
// reuses them, but keys that never come back stay until purged: run Purge
// periodically, from any one process, to bound the table.
func (s *Store) Purge(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, s.sql.purge, s.args()...)
	if err != nil {
		return 0, s.wrap(ctx, "purge", "", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.wrap(ctx, "purge", "", err)
	}
	return n, nil
}

// refused explains why an owner-checked statement changed no row: it returns
// nil when c itself already completed the key and op is "complete", and an
// error wrapping ErrNotOwner otherwise.
func (s *Store) refused(ctx context.Context, q querier, op string, c idempotency.Claim) error {
	var token, state string
	var live bool
	err := q.QueryRowContext(ctx, s.sql.inspect, s.args([]byte(c.Key))...).Scan(&token, &state, &live)
	var why string
	switch {
	case errors.Is(err, sql.ErrNoRows):
		why = "the key is not claimed (lease expired or released)"
	case err != nil:
		return s.wrap(ctx, op, c.Key, err)
	case token != c.Token && live && state == stateDone:
		why = "another owner completed the key"
	case token != c.Token && live:
		why = "another owner claimed the key"
	case token != c.Token || !live:
		why = "the key is not claimed (lease expired or released)"
	case state == stateDone && op == "complete":
		return nil // completed by this claim already
	case state == stateDone:
		why = "the key is already completed"
	default:
		// A live claim of c's that the statement did not change: it expired
		// between the statement and this query.
		why = "the lease expired"
	}
	return fmt.Errorf("sqlstore: %s %q: %s: %w", op, c.Key, why, idempotency.ErrNotOwner)
}

// checkOwned rejects claims that never owned their key.
func checkOwned(op string, c idempotency.Claim) error {
	if c.Key == "" || c.State != idempotency.Claimed || c.Token == "" {
		return fmt.Errorf("sqlstore: %s %q: the claim is %v, not an owned Claimed one: %w", op, c.Key, c.State, broker.ErrInvalidArgument)
	}
	return nil
}

// querier is what *sql.DB and *sql.Tx have in common that the store uses.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// micros is d in whole microseconds, rounded up so that a positive duration
// never becomes zero.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}
