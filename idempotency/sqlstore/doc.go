// Package sqlstore is an idempotency.Store in a table of a PostgreSQL or
// SQLite database, over database/sql. Besides the Store that
// idempotency.Dedupe drives, it offers what no other store can: CompleteTx and
// DedupeTx record a message as Done in the transaction of its side effect, for
// exactly-once effects in that database.
//
// # Table
//
// One row per key (CreateTable creates the table; Options.Table names it,
// DefaultTable otherwise):
//
//	key        BYTEA / BLOB primary key  the idempotency key's bytes: any string is a key
//	token      TEXT                      the owner's random token
//	state      TEXT                      'claimed' or 'done'
//	expires_at TIMESTAMPTZ / INTEGER     the end of the lease or TTL (SQLite: Unix microseconds)
//
// with an index on expires_at. Claim is one statement,
// INSERT ... ON CONFLICT (key) DO UPDATE ... RETURNING token, state: a new key
// or one whose record expired is taken with a fresh token, a live record is
// left as it was, and the returned token tells whether the caller won (on
// PostgreSQL, a Claim of a live key still writes a new version of its row).
// Complete and Release are an UPDATE and a DELETE whose WHERE clause holds the
// owner's token, the 'claimed' state and a live lease; when they change no row,
// a SELECT says why (ErrNotOwner, or nil for a repeated Complete). Each call is
// one round trip in the common case; Dedupe costs two per message.
//
// Expired records are taken over by the next Claim of their key; Purge deletes
// the others. Run it periodically from one process to bound the table.
//
// # Clocks
//
// On PostgreSQL, leases and TTLs are measured on the database server's clock
// (statement_timestamp()), so workers' clocks do not matter. On SQLite, whose
// database is a file on the machine of every process that opens it, they are
// measured on time.Now. Options.Now replaces either with a clock of the
// caller's, read in the process and sent with each statement; tests use it to
// expire records without waiting.
//
// # Exactly-once effects in one database
//
// idempotency.Dedupe marks a message Done after its handler returned, in a
// separate step: a crash in between lets the message run again. When the side
// effect is rows in the store's own database, DedupeTx closes that gap: it
// begins a transaction, runs the handler with it, marks the key Done with
// CompleteTx in the same transaction, and commits. Either both the rows and the
// Done record commit or neither does; a crash before the commit leaves only a
// claim that expires with its lease, and the redelivery runs the handler on a
// database without its writes. While the claim is held, no other worker runs
// the handler for the key; on PostgreSQL, a Claim that arrives between
// CompleteTx and the commit waits on the row lock and then reads Done.
//
// # SQLite
//
// SQLite has one writer at a time. Open it in WAL mode with a busy timeout
// (modernc.org/sqlite: "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)"),
// and, for DedupeTx, with transactions that take the write lock when they begin
// ("&_txlock=immediate"), so that two transactions never deadlock upgrading
// their locks. A DedupeTx transaction holds the lock while its handler runs:
// other Claims wait for it, so keep handlers short. A pool of one connection
// (db.SetMaxOpenConns(1)) works too, provided handlers use their tx, never the
// *sql.DB. On a new database file, Ping the pool once before using it from
// several goroutines: the first connection switches the file to WAL, and
// SQLite answers connections that race that switch with SQLITE_BUSY at once,
// without waiting out the busy timeout.
//
// # Failures
//
// A database that cannot be reached answers with an error, never Claimed or
// Done. Errors wrap broker.ErrUnavailable for connection failures, a server
// shutting down or out of resources, and SQLITE_BUSY after the busy timeout;
// broker.ErrClosed for a closed *sql.DB; broker.ErrNotFound when the table does
// not exist; broker.ErrPermissionDenied for refused credentials or privileges.
// The driver's error is wrapped too, for errors.As. Context errors are returned
// unwrapped.
package sqlstore
