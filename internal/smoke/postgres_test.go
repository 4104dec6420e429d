package smoke

import (
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/brokerkit/broker/internal/testenv"
)

// TestPostgresTable creates a table if needed and writes and reads one row through
// database/sql with the pgx driver.
func TestPostgresTable(t *testing.T) {
	db, err := sql.Open("pgx", testenv.PostgresURL(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := deadline(t, 20*time.Second)

	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS brokerkit_smoke (
		id         text PRIMARY KEY,
		body       text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		t.Fatalf("create table: %v", err)
	}
	id := uniqueName(t)
	t.Cleanup(func() { db.ExecContext(deadline(t, 5*time.Second), `DELETE FROM brokerkit_smoke WHERE id = $1`, id) })

	if _, err := db.ExecContext(ctx, `INSERT INTO brokerkit_smoke (id, body) VALUES ($1, $2)`, id, "hello"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var body string
	var created time.Time
	if err := db.QueryRowContext(ctx, `SELECT body, created_at FROM brokerkit_smoke WHERE id = $1`, id).
		Scan(&body, &created); err != nil {
		t.Fatalf("select: %v", err)
	}
	if body != "hello" {
		t.Errorf("body = %q, want hello", body)
	}
	if age := time.Since(created); age < -time.Minute || age > time.Minute {
		t.Errorf("created_at = %v, %v from now", created, age)
	}
}
