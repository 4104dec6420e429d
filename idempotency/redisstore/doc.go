// Package redisstore is an idempotency.Store in Redis, for services whose
// replicas must agree on which messages were handled.
//
// # Records
//
// Each idempotency key is one Redis string, KeyPrefix followed by the key,
// holding either "claimed:<token>" with the lease as its expiry, or
// "done:<token>" with the TTL as its expiry. Redis removes expired records
// itself, so the store needs no cleanup and holds at most the keys claimed
// within one lease plus those completed within one TTL.
//
// Claim is SET NX PX, inside a small Lua script that also reads the record
// when the key is taken, so that it answers Claimed, InProgress or Done in one
// atomic step. Complete and Release are scripts that compare the owner's
// token before they change anything, so an owner whose lease expired cannot
// overwrite or delete another owner's record. Dedupe runs two scripts per
// message (Claim, then Complete or Release).
//
// Leases and TTLs are measured on the Redis server's clock, rounded up to
// whole milliseconds. Workers' clocks play no part.
//
// The store works with a single server, Sentinel or a Cluster (each script
// touches one key). Scripts run by EVALSHA. When the server answers NOSCRIPT
// (after a restart or a SCRIPT FLUSH), the store loads the scripts with
// SCRIPT LOAD and sends the refused calls again, or runs them by EVAL if
// SCRIPT LOAD is not allowed; callers see none of it.
//
// # Batching
//
// Concurrent calls on one Store share round trips (group commit). A call made
// while fewer than Options.MaxInFlight round trips are in flight is sent at
// once, by its caller, so a store that is not busy adds no latency. Calls made
// while that many are in flight queue; as soon as one returns, the queued
// calls, up to Options.MaxBatch, go in the next round trip as one pipeline,
// sent by the oldest of their callers. So a Store uses at most MaxInFlight
// connections (per node of a Cluster), runs no goroutine of its own, and
// under load sends many calls per round trip instead of waiting for one reply
// per call, which saves the client and the server a system call and a wake-up
// per call. Each caller gets the answer to its own call.
//
// A caller whose context ends while its call is queued returns ctx.Err(), and
// its call is not sent; one whose call is in flight returns ctx.Err() too, but
// the call still runs: a Claim then holds the key until its lease expires, as
// when a reply is lost, and a Complete or Release may or may not have
// happened. A batch runs with the values, but neither the deadline nor the
// cancellation, of its sender's context; its round trip is bounded by the
// client's read and write timeouts, and its sender waits for it even when its
// own context has ended.
//
// # Failures
//
// A store that cannot be reached answers with an error, never Claimed or Done:
// Dedupe then delays the message instead of letting a duplicate through. A
// round trip that fails fails every call of its batch that got no reply.
// Errors wrap broker.ErrUnavailable when the server could not be reached or
// is loading, read-only, failing over or out of memory; broker.ErrClosed when
// the client was closed; broker.ErrPermissionDenied when the server refused
// the credentials or the command. The client's own error is wrapped too, for
// errors.As. Context errors are returned unwrapped.
//
// Durability is Redis's: a record written just before a failover or a crash
// without AOF fsync can be lost, and the message it recorded can then run
// once more. Where that is not acceptable, keep the record in the database of
// the side effect (package sqlstore, DedupeTx).
package redisstore
