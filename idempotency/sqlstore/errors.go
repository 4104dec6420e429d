package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/brokerkit/broker"
)

// sqlStateClasses maps PostgreSQL SQLSTATE codes, or their two-letter class,
// to the broker error they mean.
var sqlStateClasses = map[string]error{
	"08":    broker.ErrUnavailable, // connection exception
	"53":    broker.ErrUnavailable, // insufficient resources: too many connections, disk full
	"57P01": broker.ErrUnavailable, // admin shutdown
	"57P02": broker.ErrUnavailable, // crash shutdown
	"57P03": broker.ErrUnavailable, // cannot connect now: starting up
	"28":    broker.ErrPermissionDenied,
	"42501": broker.ErrPermissionDenied, // insufficient privilege
	"42P01": broker.ErrNotFound,         // undefined table: CreateTable was not run
}

// SQLite result codes (the primary code, the low byte of an extended one).
var sqliteCodes = map[int]error{
	3:  broker.ErrPermissionDenied, // SQLITE_PERM
	5:  broker.ErrUnavailable,      // SQLITE_BUSY: busy_timeout ran out
	6:  broker.ErrUnavailable,      // SQLITE_LOCKED
	10: broker.ErrUnavailable,      // SQLITE_IOERR
	13: broker.ErrFull,             // SQLITE_FULL
	14: broker.ErrUnavailable,      // SQLITE_CANTOPEN
	23: broker.ErrPermissionDenied, // SQLITE_AUTH
}

// errDBClosed is the text of the error database/sql returns from a closed
// *sql.DB; the package does not export it.
const errDBClosed = "sql: database is closed"

// wrap names the operation and the key, and adds the broker error that err
// means, if any. It returns ctx.Err() unwrapped when ctx ended.
func (s *Store) wrap(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	what := "sqlstore: " + op
	if key != "" {
		what += fmt.Sprintf(" %q", key)
	}
	switch sentinel := s.classify(err); sentinel {
	case nil:
	case broker.ErrNotFound:
		return fmt.Errorf("%s: table %s: %w (create it with CreateTable): %w", what, s.table, sentinel, err)
	default:
		return fmt.Errorf("%s: %w: %w", what, sentinel, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (s *Store) classify(err error) error {
	var netErr net.Error
	switch {
	case err.Error() == errDBClosed:
		return broker.ErrClosed
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.As(err, &netErr):
		return broker.ErrUnavailable
	}
	var pg interface{ SQLState() string }
	if errors.As(err, &pg) {
		code := pg.SQLState()
		if e, ok := sqlStateClasses[code]; ok {
			return e
		}
		if len(code) == 5 {
			return sqlStateClasses[code[:2]]
		}
		return nil
	}
	var lite interface{ Code() int }
	if s.dialect == SQLite && errors.As(err, &lite) {
		if e, ok := sqliteCodes[lite.Code()&0xff]; ok {
			return e
		}
		if strings.Contains(err.Error(), "no such table") {
			return broker.ErrNotFound
		}
	}
	return nil
}
