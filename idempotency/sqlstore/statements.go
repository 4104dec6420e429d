package sqlstore

import (
	"fmt"
	"strings"
	"time"
)

// The values of the state column.
const (
	stateClaimed = "claimed"
	stateDone    = "done"
)

// statements are a store's SQL, built once by New for its dialect, table and
// clock. Parameters are, in order: the key, the token, a duration in
// microseconds (the statements that take them), then the current time when the
// store reads its clock in the process (s.now != nil).
type statements struct {
	create                                   []string
	claim, complete, release, inspect, purge string
}

func (s *Store) statements() statements {
	t := s.table
	return statements{
		create: s.createStatements(),
		// Every column is set, but to its old value while the record is live:
		// the statement then leaves the record as it was and RETURNING
		// reports it, so one round trip tells Claimed, InProgress and Done
		// apart without a second query that could race with an expiry.
		claim: s.placeholders(fmt.Sprintf(`INSERT INTO %[1]s AS t (key, token, state, expires_at)
VALUES ($1, $2, 'claimed', %[2]s)
ON CONFLICT (key) DO UPDATE SET
	token = CASE WHEN t.expires_at <= %[3]s THEN excluded.token ELSE t.token END,
	state = CASE WHEN t.expires_at <= %[3]s THEN excluded.state ELSE t.state END,
	expires_at = CASE WHEN t.expires_at <= %[3]s THEN excluded.expires_at ELSE t.expires_at END
RETURNING token, state`, t, s.plus(s.nowAt(4), 3), s.nowAt(4))),
		complete: s.placeholders(fmt.Sprintf(`UPDATE %[1]s SET state = 'done', expires_at = %[2]s
WHERE key = $1 AND token = $2 AND state = 'claimed' AND expires_at > %[3]s`, t, s.plus(s.nowAt(4), 3), s.nowAt(4))),
		release: s.placeholders(fmt.Sprintf(`DELETE FROM %[1]s
WHERE key = $1 AND token = $2 AND state = 'claimed' AND expires_at > %[2]s`, t, s.nowAt(3))),
		inspect: s.placeholders(fmt.Sprintf(`SELECT token, state, expires_at > %[2]s FROM %[1]s WHERE key = $1`, t, s.nowAt(2))),
		purge:   s.placeholders(fmt.Sprintf(`DELETE FROM %[1]s WHERE expires_at <= %[2]s`, t, s.nowAt(1))),
	}
}

// createStatements create the table and its index. The key is bytes, so that
// any string is a key, NUL bytes and invalid UTF-8 included. On SQLite,
// expires_at is Unix time in microseconds.
func (s *Store) createStatements() []string {
	schema, name := "", s.table
	if i := strings.IndexByte(s.table, '.'); i >= 0 {
		schema, name = s.table[:i+1], s.table[i+1:]
	}
	if s.dialect == PostgreSQL {
		return []string{
			fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	key BYTEA PRIMARY KEY,
	token TEXT NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
	expires_at TIMESTAMPTZ NOT NULL
)`, s.table),
			// An index name takes no schema on PostgreSQL: it lives in the table's.
			fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s_expires_at_idx ON %s (expires_at)`, name, s.table),
		}
	}
	return []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	key BLOB PRIMARY KEY,
	token TEXT NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
	expires_at INTEGER NOT NULL
) WITHOUT ROWID`, s.table),
		// On SQLite the index name carries the schema, and the table takes none.
		fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s%s_expires_at_idx ON %s (expires_at)`, schema, name, name),
	}
}

// nowAt is the SQL for the current time, which is parameter i when the store
// reads its clock in the process.
func (s *Store) nowAt(i int) string {
	switch {
	case s.now == nil:
		return "statement_timestamp()" // PostgreSQL's, fixed for the statement
	case s.dialect == PostgreSQL:
		return fmt.Sprintf("$%d::timestamptz", i)
	}
	return fmt.Sprintf("$%d", i)
}

// plus is the SQL for time now plus the microseconds of parameter i.
func (s *Store) plus(now string, i int) string {
	if s.dialect == PostgreSQL {
		return fmt.Sprintf("%s + $%d::bigint * interval '1 microsecond'", now, i)
	}
	return fmt.Sprintf("%s + $%d", now, i)
}

// placeholders turns $1 into ?1 on SQLite, whose numbered parameters every
// SQLite driver supports.
func (s *Store) placeholders(q string) string {
	if s.dialect == SQLite {
		return strings.ReplaceAll(q, "$", "?")
	}
	return q
}

// args returns the statement parameters: args, then the current time when the
// store reads its clock in the process.
func (s *Store) args(args ...any) []any {
	if s.now == nil {
		return args
	}
	now := s.now()
	if s.dialect == SQLite {
		return append(args, now.UnixMicro())
	}
	return append(args, now.UTC().Truncate(time.Microsecond))
}
