// Package idempotency makes duplicate deliveries harmless: a message handled
// twice has its side effect (an email, a charge, a row) once.
//
// Every broker delivers at least once. A redelivery after a lost
// acknowledgement, a producer that retried a publish, or a consumer that
// crashed after its side effect all hand the same message to a handler again,
// possibly to two workers at the same moment.
//
// # Why check-then-act is not enough
//
// The obvious guard reads a "seen" set and acts on what it read:
//
//	if !seen(id) { sendEmail(); markSeen(id) }
//
// Two workers that receive the same message at once both read "not seen"
// before either writes, and both send. Marking first does not help either:
//
//	if markSeen(id) { sendEmail() }
//
// When sendEmail fails, the redelivery finds the message marked and skips it:
// the email is never sent. Deduplication must both exclude
// concurrent runs and forget failed ones.
//
// # Claim, Complete, Release
//
// A Store decides in one atomic step. Store.Claim(key, lease) returns
//
//   - Claimed: the caller now owns the key, with a random owner token, until
//     the lease expires. It runs the side effect;
//   - InProgress: another owner holds a live lease. The caller must not run the
//     side effect; it retries later;
//   - Done: the key was completed (within its TTL). The caller skips the side
//     effect and acknowledges.
//
// The owner then calls Complete(claim, ttl) after the side effect succeeded,
// so the key reads Done for ttl, or Release(claim) after it failed, so that a
// redelivery can claim it at once. A worker that crashes holding a claim
// blocks the key only until its lease expires. Complete and Release check the
// owner token: an owner whose lease expired, so that another worker may hold
// the key now, is refused with ErrNotOwner instead of overwriting the other
// worker's claim.
//
// Dedupe is the broker.Middleware that drives a Store around a handler; the
// key is the message ID unless DedupeOptions.Key says otherwise.
//
// # What it does not do
//
// The side effect and Complete are two steps. If the process dies between
// them, the key is free again when the lease expires and the redelivery runs
// the side effect a second time: Dedupe removes the duplicates that
// at-least-once delivery produces in normal operation, not the one a crash at
// that instant leaves. Exactly-once effects need the dedupe record to commit
// in the same transaction as the effect, which only a store that lives in the
// same database as the effect can offer.
//
// Stores are MemoryStore (one process, bounded) and, for services with several
// replicas, packages redisstore and sqlstore (PostgreSQL, SQLite; its DedupeTx
// closes that gap for effects in the same database). Package storetest is the
// suite every Store must pass.
package idempotency
