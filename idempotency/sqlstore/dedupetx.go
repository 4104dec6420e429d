package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/idempotency"
)

// TxHandler handles one message inside tx, a transaction on the store's
// database that DedupeTx begins, and commits or rolls back: the handler must
// do neither. Its writes through tx commit if and only if the message is
// marked Done.
type TxHandler func(ctx context.Context, tx *sql.Tx, m *broker.Message) error

// DedupeTxOptions configure DedupeTx. The zero value is valid.
type DedupeTxOptions struct {
	// DedupeOptions are Dedupe's: Key, Namespace, Lease, TTL, SettleTimeout
	// (here bounding the Release after a failure) and Logger, with the same
	// defaults.
	idempotency.DedupeOptions
	// TxOptions are passed to BeginTx. Nil means the driver's defaults (READ
	// COMMITTED on PostgreSQL).
	TxOptions *sql.TxOptions
}

// DedupeTx returns a handler that runs h at most once per key with
// exactly-once effects in the store's database; nil opts means the defaults.
// For each message it claims the key like idempotency.Dedupe (Done: skip and
// acknowledge; InProgress: a retryable error wrapping ErrInProgress), then
// begins a transaction, runs h with it, marks the key Done in the same
// transaction (CompleteTx) and commits. The handler's writes and the Done
// record commit together or not at all:
//
//   - h returns an error or panics: the transaction is rolled back and the key
//     released, so a redelivery runs h again on a database without its writes.
//     The error is returned unchanged (the panic continues).
//   - the claim's lease ran out while h ran (CompleteTx fails with
//     ErrNotOwner): the transaction is rolled back and the error returned, so
//     that the message is redelivered; another worker may hold the key now and
//     commit its effects once.
//   - the commit fails: the key is released and the error returned. If the
//     commit did happen and only its reply was lost, the release is refused and
//     the redelivery is skipped as Done.
//
// A crash at any point leaves either both the effects and the Done record, or
// neither and a claim that expires with its lease. Effects outside the
// database (an email, an HTTP call) keep Dedupe's at-least-once guarantee.
//
// On SQLite, open the database with an immediate transaction lock
// (modernc.org/sqlite: "_txlock=immediate") or one connection, and have h use
// tx, never the *sql.DB, while the transaction is open. DedupeTx panics if
// store or h is nil or a duration in opts is negative.
func DedupeTx(store *Store, opts *DedupeTxOptions, h TxHandler) broker.Handler {
	if store == nil || h == nil {
		panic("sqlstore: DedupeTx with a nil Store or TxHandler")
	}
	d := &dedupeTx{store: store, h: h}
	if opts != nil {
		d.opts = *opts
	}
	d.opts.DedupeOptions = d.opts.DedupeOptions.WithDefaults()
	return d.handle
}

type dedupeTx struct {
	store *Store
	h     TxHandler
	opts  DedupeTxOptions
}

func (d *dedupeTx) handle(ctx context.Context, m *broker.Message) error {
	c, done, err := idempotency.ClaimMessage(ctx, d.store, d.opts.DedupeOptions, m)
	if done || err != nil {
		return err
	}
	key := c.Key

	tx, err := d.store.db.BeginTx(ctx, d.opts.TxOptions)
	if err != nil {
		d.release(ctx, m, c)
		return d.store.wrap(ctx, "begin transaction for", key, err)
	}
	owned, committed := true, false
	defer func() { // on every path but a commit, panics included
		if !committed {
			_ = tx.Rollback()
			if owned {
				d.release(ctx, m, c)
			}
		}
	}()
	if err := d.h(ctx, tx, m); err != nil {
		return err
	}
	if err := d.store.CompleteTx(ctx, tx, c, d.opts.TTL); err != nil {
		if errors.Is(err, idempotency.ErrNotOwner) {
			owned = false
			d.opts.Logger.Warn("sqlstore: the handler outlived its claim's lease; its transaction is rolled back and the message redelivered; make DedupeOptions.Lease longer than the handler can take",
				"id", m.ID, "key", key, "lease", d.opts.Lease, "error", err)
		}
		return fmt.Errorf("sqlstore: message %s: %w", m.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: message %s: %w", m.ID, d.store.wrap(ctx, "commit", key, err))
	}
	committed = true
	return nil
}

// release gives up c after a failure, with a context that outlives the
// handler's, retried as Dedupe retries; what fails is logged.
func (d *dedupeTx) release(ctx context.Context, m *broker.Message, c idempotency.Claim) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.SettleTimeout)
	defer cancel()
	err := d.store.Release(sctx, c)
	if err != nil {
		err = idempotency.RetrySettle(sctx, err, func(ctx context.Context) error { return d.store.Release(ctx, c) })
	}
	switch {
	case err == nil:
	case errors.Is(err, idempotency.ErrNotOwner):
		d.opts.Logger.Warn("sqlstore: the claim had ended before its release: its lease expired while the handler ran, or a commit reported as failed went through",
			"id", m.ID, "key", c.Key, "lease", d.opts.Lease, "error", err)
	default:
		d.opts.Logger.Warn("sqlstore: could not release the claim; redeliveries are refused with ErrInProgress until its lease expires",
			"id", m.ID, "key", c.Key, "lease", d.opts.Lease, "error", err)
	}
}
