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
// atomic step and one round trip. Complete and Release are scripts that
// compare the owner's token before they change anything, so an owner whose
// lease expired cannot overwrite or delete another owner's record. Every
// method costs one round trip; Dedupe costs two per message (Claim, then
// Complete or Release).
//
// Leases and TTLs are measured on the Redis server's clock, rounded up to
// whole milliseconds. Workers' clocks play no part.
//
// The store works with a single server, Sentinel or a Cluster (each script
// touches one key). Scripts run by EVALSHA, falling back to EVAL once after a
// server restart.
//
// # Failures
//
// A store that cannot be reached answers with an error, never Claimed or Done:
// Dedupe then delays the message instead of letting a duplicate through.
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
