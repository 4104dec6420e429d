package idempotency

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var (
	// ErrNotOwner: Complete or Release was called with a claim that no longer
	// holds its key, because its lease expired (whether or not another owner
	// claimed the key since), it was released, or the key was completed by
	// another owner.
	ErrNotOwner = errors.New("idempotency: not the owner of the claim")
	// ErrInProgress: another owner holds a live claim on the key. It is a
	// retryable error, never broker.Permanent: returned from a handler, it makes
	// the consumer redeliver the message after its backoff, when the other owner
	// has either completed the key (the redelivery is then skipped) or released
	// it (the redelivery then runs).
	ErrInProgress = errors.New("idempotency: key is being processed by another owner")
)

// State is the outcome of Store.Claim.
type State uint8

const (
	// Claimed: the caller owns the key until its lease expires and must call
	// Complete or Release.
	Claimed State = iota + 1
	// InProgress: another owner holds a live lease on the key.
	InProgress
	// Done: the key was completed and its record has not yet expired.
	Done
)

func (s State) String() string {
	switch s {
	case Claimed:
		return "Claimed"
	case InProgress:
		return "InProgress"
	case Done:
		return "Done"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Claim is what Store.Claim returns, and what its owner passes back to
// Complete or Release.
type Claim struct {
	// Key is the claimed key.
	Key string
	// Token is the owner's token, unique to this claim, when State is
	// Claimed, and empty otherwise. Complete and Release compare it with the
	// token the store holds.
	Token string
	// State says whether the caller now owns the key.
	State State
}

// Store records which keys are being processed and which are done. Every
// method is safe for concurrent use, from several processes for stores that
// are shared. A store that cannot be reached returns an error; it never
// answers Claimed or Done on a guess.
//
// Keys are opaque non-empty strings. Leases and TTLs are measured on the
// store's clock. Errors name the operation and the key. A method called with a
// context that has ended returns ctx.Err() without changing anything. Invalid
// arguments (an empty key, a non-positive lease or TTL, a Claim whose State is
// not Claimed) give an error wrapping broker.ErrInvalidArgument. The suite in
// package storetest checks all of this.
type Store interface {
	// Claim atomically takes key for lease unless another owner holds a live
	// lease on it (InProgress) or it was completed less than its TTL ago (Done).
	// An expired lease or an expired Done record counts as absent.
	Claim(ctx context.Context, key string, lease time.Duration) (Claim, error)
	// Complete marks c's key done for ttl, provided c still holds it with a
	// live lease; otherwise it returns an error wrapping ErrNotOwner. Completing
	// a key that c itself already completed returns nil, so a Complete whose
	// reply was lost may be repeated.
	Complete(ctx context.Context, c Claim, ttl time.Duration) error
	// Release gives up c's claim so that the key can be claimed at once,
	// provided c still holds it with a live lease; otherwise it returns an
	// error wrapping ErrNotOwner.
	Release(ctx context.Context, c Claim) error
}
