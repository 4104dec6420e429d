package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
	"github.com/brokerkit/broker/idempotency/sqlstore"
)

// A handler whose side effect is a row in the same SQLite database as the
// dedupe record: the row and the record commit together, so a duplicate
// delivery charges once even if the process dies at any point.
func ExampleDedupeTx() {
	dir, err := os.MkdirTemp("", "sqlstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+
		"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	ctx := context.Background()
	store, err := sqlstore.New(db, nil) // the dialect is detected from the driver
	if err != nil {
		log.Fatal(err)
	}
	if err := store.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE charges (order_id TEXT, cents INTEGER)`); err != nil {
		log.Fatal(err)
	}

	charge := sqlstore.DedupeTx(store, nil, func(ctx context.Context, tx *sql.Tx, m *broker.Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO charges (order_id, cents) VALUES (?, ?)`, string(m.Body), 1999)
		return err
	})

	m := &broker.Message{ID: "msg-1", Body: []byte("order-42")}
	for range 2 { // the broker delivers the message twice
		if err := charge(ctx, m); err != nil {
			log.Fatal(err)
		}
	}

	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM charges`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	c, err := store.Claim(ctx, m.ID, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("charges:", n)
	fmt.Println("message:", c.State)
	// Output:
	// charges: 1
	// message: Done
}

// The Store on its own, as idempotency.Dedupe uses it.
func ExampleStore() {
	dir, err := os.MkdirTemp("", "sqlstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	ctx := context.Background()
	store, err := sqlstore.New(db, &sqlstore.Options{Table: "seen_messages"})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	handler := idempotency.Dedupe(store, nil)(func(ctx context.Context, m *broker.Message) error {
		fmt.Println("handling", m.ID)
		return nil
	})
	for range 2 {
		if err := handler(ctx, &broker.Message{ID: "msg-1"}); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// handling msg-1
}
