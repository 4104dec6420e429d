package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/sqlstore"
)

// fixture is a store and the tables of a side effect in the same database:
// orders, whose parent must exist in parents when the transaction commits (a
// deferred foreign key, so that a commit can fail after CompleteTx).
type fixture struct {
	t       *testing.T
	db      *sql.DB
	store   *sqlstore.Store
	clock   *fakeClock // nil: the store's default clock
	orders  string
	parents string
}

// eachDatabase runs f on PostgreSQL and on SQLite. With a clock, the store
// reads it; otherwise PostgreSQL's store uses the database's clock.
func eachDatabase(t *testing.T, clock bool, f func(fx *fixture)) {
	for _, name := range []string{"PostgreSQL", "SQLite"} {
		t.Run(name, func(t *testing.T) {
			var db *sql.DB
			if name == "PostgreSQL" {
				db = postgres(t)
			} else {
				db = sqlite(t, false)
			}
			fx := &fixture{t: t, db: db}
			var now func() time.Time
			if clock {
				fx.clock = &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
				now = fx.clock.Now
			}
			fx.store = newStore(t, db, now)
			suffix := strings.ToLower(rand.Text())
			fx.parents, fx.orders = "parents_"+suffix, "orders_"+suffix
			fx.exec(fmt.Sprintf(`CREATE TABLE %s (id TEXT PRIMARY KEY)`, fx.parents))
			fx.exec(fmt.Sprintf(`CREATE TABLE %s (id TEXT NOT NULL,
				parent TEXT REFERENCES %s (id) DEFERRABLE INITIALLY DEFERRED)`, fx.orders, fx.parents))
			fx.exec(fmt.Sprintf(`INSERT INTO %s (id) VALUES ('p')`, fx.parents))
			t.Cleanup(func() {
				_, _ = db.Exec("DROP TABLE " + fx.orders)
				_, _ = db.Exec("DROP TABLE " + fx.parents)
			})
			f(fx)
		})
	}
}

// q adapts a statement written with $1 placeholders to the dialect.
func (fx *fixture) q(query string) string {
	if fx.store.Dialect() == sqlstore.SQLite {
		return strings.ReplaceAll(query, "$", "?")
	}
	return query
}

func (fx *fixture) exec(query string, args ...any) {
	fx.t.Helper()
	if _, err := fx.db.Exec(fx.q(query), args...); err != nil {
		fx.t.Fatalf("%s: %v", query, err)
	}
}

// insertOrder is the side effect: a row in orders for m, whose parent is the
// message's "parent" header, if any.
func (fx *fixture) insertOrder(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
	var parent sql.NullString
	if p, ok := m.Headers["parent"]; ok {
		parent = sql.NullString{String: p, Valid: true}
	}
	_, err := tx.ExecContext(ctx, fx.q(`INSERT INTO `+fx.orders+` (id, parent) VALUES ($1, $2)`), m.ID, parent)
	return err
}

// rows counts the orders of id.
func (fx *fixture) rows(id string) int {
	fx.t.Helper()
	var n int
	if err := fx.db.QueryRow(fx.q(`SELECT count(*) FROM `+fx.orders+` WHERE id = $1`), id).Scan(&n); err != nil {
		fx.t.Fatal(err)
	}
	return n
}

// state claims key for a minute and releases the claim at once: it tells the
// key's state without holding it.
func (fx *fixture) state(key string) idempotency.State {
	fx.t.Helper()
	ctx := context.Background()
	c, err := fx.store.Claim(ctx, key, time.Minute)
	if err != nil {
		fx.t.Fatal(err)
	}
	if c.State == idempotency.Claimed {
		if err := fx.store.Release(ctx, c); err != nil {
			fx.t.Fatal(err)
		}
	}
	return c.State
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (fx *fixture) dedupe(h sqlstore.TxHandler) broker.Handler {
	return sqlstore.DedupeTx(fx.store, &sqlstore.DedupeTxOptions{
		DedupeOptions: idempotency.DedupeOptions{Logger: quiet()},
	}, h)
}

// The side effect and the Done record commit together; a duplicate is then
// skipped without running the handler.
func TestDedupeTxCommitsBoth(t *testing.T) {
	eachDatabase(t, false, func(fx *fixture) {
		runs := 0
		h := fx.dedupe(func(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
			runs++
			return fx.insertOrder(ctx, tx, m)
		})
		m := &broker.Message{ID: "order-1"}
		for i := range 2 {
			if err := h(context.Background(), m); err != nil {
				t.Fatalf("delivery %d: %v", i+1, err)
			}
		}
		if runs != 1 || fx.rows("order-1") != 1 || fx.state("order-1") != idempotency.Done {
			t.Fatalf("after two deliveries: %d runs, %d rows, key %v; want 1 run, 1 row, Done",
				runs, fx.rows("order-1"), fx.state("order-1"))
		}
	})
}

// A handler that fails after its insert leaves neither the row nor a claim:
// the redelivery runs it again.
func TestDedupeTxHandlerErrorRollsBackBoth(t *testing.T) {
	eachDatabase(t, false, func(fx *fixture) {
		errDownstream := errors.New("downstream refused")
		fail := true
		h := fx.dedupe(func(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
			if err := fx.insertOrder(ctx, tx, m); err != nil {
				return err
			}
			if fail {
				return errDownstream
			}
			return nil
		})
		m := &broker.Message{ID: "order-1"}
		if err := h(context.Background(), m); !errors.Is(err, errDownstream) {
			t.Fatalf("failing delivery = %v, want the handler's error", err)
		}
		if n, st := fx.rows("order-1"), fx.state("order-1"); n != 0 || st != idempotency.Claimed {
			t.Fatalf("after the failure: %d rows, key %v; want 0 rows and a free key", n, st)
		}
		fail = false
		if err := h(context.Background(), m); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if n := fx.rows("order-1"); n != 1 {
			t.Fatalf("after the redelivery: %d rows, want 1", n)
		}
	})
}

// A handler that panics after its insert leaves neither the row nor a claim.
func TestDedupeTxPanicRollsBackBoth(t *testing.T) {
	eachDatabase(t, false, func(fx *fixture) {
		h := fx.dedupe(func(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
			if err := fx.insertOrder(ctx, tx, m); err != nil {
				return err
			}
			panic("handler bug")
		})
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("the panic did not go on")
				}
			}()
			_ = h(context.Background(), &broker.Message{ID: "order-1"})
		}()
		if n, st := fx.rows("order-1"), fx.state("order-1"); n != 0 || st != idempotency.Claimed {
			t.Fatalf("after the panic: %d rows, key %v; want 0 rows and a free key", n, st)
		}
	})
}

// A commit that fails after CompleteTx (a deferred constraint, checked at
// commit) rolls back both the row and the Done record, and frees the key.
func TestDedupeTxCommitFailureRollsBackBoth(t *testing.T) {
	eachDatabase(t, false, func(fx *fixture) {
		runs := 0
		h := fx.dedupe(func(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
			runs++
			return fx.insertOrder(ctx, tx, m)
		})
		m := &broker.Message{ID: "order-1", Headers: map[string]string{"parent": "not-yet"}}
		err := h(context.Background(), m)
		if err == nil {
			t.Fatal("the delivery whose commit fails returned nil")
		}
		if n, st := fx.rows("order-1"), fx.state("order-1"); n != 0 || st != idempotency.Claimed {
			t.Fatalf("after the failed commit (%v): %d rows, key %v; want 0 rows and a free key", err, n, st)
		}
		fx.exec(`INSERT INTO ` + fx.parents + ` (id) VALUES ('not-yet')`)
		if err := h(context.Background(), m); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if n, st := fx.rows("order-1"), fx.state("order-1"); runs != 2 || n != 1 || st != idempotency.Done {
			t.Fatalf("after the redelivery: %d runs, %d rows, key %v; want 2 runs, 1 row, Done", runs, n, st)
		}
	})
}

// CompleteTx by hand: the Done record is part of the transaction, rolled back
// with it (the claim stays until released) and committed with it.
func TestCompleteTx(t *testing.T) {
	eachDatabase(t, false, func(fx *fixture) {
		ctx := context.Background()
		m := &broker.Message{ID: "order-1"}
		attempt := func(commit bool) idempotency.Claim {
			t.Helper()
			c, err := fx.store.Claim(ctx, m.ID, time.Minute)
			if err != nil || c.State != idempotency.Claimed {
				t.Fatalf("Claim = %v, %v", c.State, err)
			}
			tx, err := fx.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if err := fx.insertOrder(ctx, tx, m); err != nil {
				t.Fatal(err)
			}
			if err := fx.store.CompleteTx(ctx, tx, c, time.Hour); err != nil {
				t.Fatalf("CompleteTx: %v", err)
			}
			if commit {
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			return c
		}
		c := attempt(false) // a crash after CompleteTx, before the commit
		if n, st := fx.rows(m.ID), fx.state(m.ID); n != 0 || st != idempotency.InProgress {
			t.Fatalf("after the rollback: %d rows, key %v; want 0 rows, still claimed", n, st)
		}
		if err := fx.store.Release(ctx, c); err != nil {
			t.Fatalf("Release after the rollback: %v", err)
		}
		c = attempt(true)
		if n, st := fx.rows(m.ID), fx.state(m.ID); n != 1 || st != idempotency.Done {
			t.Fatalf("after the commit: %d rows, key %v; want 1 row, Done", n, st)
		}
		if err := fx.store.Complete(ctx, c, time.Hour); err != nil {
			t.Errorf("Complete repeated after CompleteTx: %v", err)
		}
		if err := fx.store.CompleteTx(ctx, nil, c, time.Hour); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("CompleteTx with a nil tx = %v, want ErrInvalidArgument", err)
		}
	})
}

// A handler that outlives its lease has its transaction rolled back; the
// redelivery runs it once.
func TestDedupeTxLeaseExpired(t *testing.T) {
	eachDatabase(t, true, func(fx *fixture) {
		slow := true
		h := sqlstore.DedupeTx(fx.store, &sqlstore.DedupeTxOptions{
			DedupeOptions: idempotency.DedupeOptions{Lease: time.Minute, Logger: quiet()},
		}, func(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
			if slow {
				fx.clock.Advance(2 * time.Minute)
			}
			return fx.insertOrder(ctx, tx, m)
		})
		m := &broker.Message{ID: "order-1"}
		if err := h(context.Background(), m); !errors.Is(err, idempotency.ErrNotOwner) || broker.IsPermanent(err) {
			t.Fatalf("delivery that outlived its lease = %v, want a retryable error wrapping ErrNotOwner", err)
		}
		if n := fx.rows("order-1"); n != 0 {
			t.Fatalf("after the late delivery: %d rows, want 0", n)
		}
		slow = false
		if err := h(context.Background(), m); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if n := fx.rows("order-1"); n != 1 {
			t.Fatalf("after the redelivery: %d rows, want 1", n)
		}
	})
}

// Two deliveries of one message at once run the handler once and leave one
// row. On PostgreSQL the second is refused with ErrInProgress while the first
// runs, and skipped as Done once it committed. On SQLite the first one's
// transaction holds the database's write lock, so the second's Claim waits
// for the commit and finds the key Done (or, if it claimed before the
// transaction began, is refused with ErrInProgress).
func TestDedupeTxConcurrentDuplicates(t *testing.T) {
	eachDatabase(t, false, func(fx *fixture) {
		var runs atomic.Int32
		entered := make(chan struct{}, 2)
		proceed := make(chan struct{})
		h := fx.dedupe(func(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
			runs.Add(1)
			entered <- struct{}{}
			<-proceed
			return fx.insertOrder(ctx, tx, m)
		})
		m := &broker.Message{ID: "order-1"}
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- h(context.Background(), m.Clone()) }()
		}
		<-entered // one delivery runs the handler
		var results []error
		if fx.store.Dialect() == sqlstore.PostgreSQL {
			results = append(results, <-errs) // the other is refused meanwhile
			if !errors.Is(results[0], idempotency.ErrInProgress) {
				t.Fatalf("the concurrent delivery = %v, want ErrInProgress", results[0])
			}
		}
		close(proceed)
		for len(results) < 2 {
			results = append(results, <-errs)
		}
		for _, err := range results {
			switch {
			case errors.Is(err, idempotency.ErrInProgress):
				if err := h(context.Background(), m.Clone()); err != nil {
					t.Fatalf("the redelivery of the refused copy: %v", err)
				}
			case err != nil:
				t.Fatalf("delivery: %v", err)
			}
		}
		if n := fx.rows("order-1"); n != 1 || runs.Load() != 1 {
			t.Fatalf("%d handler runs and %d rows, want 1 and 1", runs.Load(), n)
		}
	})
}

// Workers race over the same messages, retrying each until it is acknowledged,
// as redeliveries would: every message has its row exactly once.
func TestDedupeTxUnderContention(t *testing.T) {
	eachDatabase(t, false, func(fx *fixture) {
		const workers, messages = 6, 20
		h := fx.dedupe(fx.insertOrder)
		deadline := time.Now().Add(30 * time.Second)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range messages {
					m := &broker.Message{ID: fmt.Sprintf("order-%02d", (i+w*3)%messages)}
					for {
						err := h(context.Background(), m)
						if err == nil {
							break
						}
						if !errors.Is(err, idempotency.ErrInProgress) || time.Now().After(deadline) {
							errs <- fmt.Errorf("worker %d, %s: %w", w, m.ID, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for i := range messages {
			if n := fx.rows(fmt.Sprintf("order-%02d", i)); n != 1 {
				t.Errorf("order-%02d: %d rows, want 1", i, n)
			}
		}
	})
}
