package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Adapters wrap them together with the broker client's own
// error, so both errors.Is(err, broker.ErrNotFound) and errors.As(err, &native)
// work. Context errors are returned unwrapped.
var (
	// ErrClosed: the Publisher or Consumer was closed.
	ErrClosed = errors.New("broker: closed")
	// ErrInvalidArgument: a bad URL, option, topic or message. Retrying the same
	// call cannot succeed.
	ErrInvalidArgument = errors.New("broker: invalid argument")
	// ErrMessageTooLarge: a message exceeds the broker's size limit. It is
	// detected before anything is sent.
	ErrMessageTooLarge = errors.New("broker: message too large")
	// ErrNotFound: the topic or queue does not exist and the adapter was not
	// asked to create it.
	ErrNotFound = errors.New("broker: not found")
	// ErrUnsupported: the adapter cannot provide what the options ask for, such
	// as fan-out on SQS. Reported when a consumer starts, never mid-stream.
	ErrUnsupported = errors.New("broker: unsupported")
	// ErrPermissionDenied: the broker refused the credentials or the operation.
	ErrPermissionDenied = errors.New("broker: permission denied")
	// ErrUnavailable: the broker could not be reached or is overloaded. The call
	// may succeed if retried later; nothing was accepted.
	ErrUnavailable = errors.New("broker: unavailable")
	// ErrFull: the broker (or the in-memory adapter) is at its configured
	// capacity and refused the message rather than dropping it.
	ErrFull = errors.New("broker: full")
)

// IsRetryable reports whether a later attempt of the call that returned err may
// succeed: the broker was unavailable or full, or it failed for a reason the
// adapter did not classify as permanent. Context errors, invalid
// arguments, oversized messages, missing topics, closed clients and denied
// permissions are not retryable.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	for _, permanent := range []error{ErrClosed, ErrInvalidArgument, ErrMessageTooLarge,
		ErrNotFound, ErrUnsupported, ErrPermissionDenied} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	return !IsPermanent(err)
}

type permanentError struct{ err error }

func (p *permanentError) Error() string { return "permanent: " + p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// Permanent marks a handler error as one that no retry can fix, such as a
// message that cannot be decoded. The consumer dead-letters the message at once
// instead of redelivering it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// PublishError reports the messages of one Publish call that the broker did
// not accept. Messages not listed were accepted.
type PublishError struct {
	// Topic is the topic of the failed Publish.
	Topic string
	// Failed lists the rejected messages in the order they were passed.
	Failed []FailedMessage
}

// FailedMessage is one message that a Publish could not deliver to the broker.
type FailedMessage struct {
	// Index is the message's position in the msgs passed to Publish.
	Index int
	// ID is the message's ID (assigned before sending when it was empty).
	ID string
	// Err says why it failed; it wraps a sentinel where one applies.
	Err error
}

func (e *PublishError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "broker: publish to %q: %d message(s) not accepted", e.Topic, len(e.Failed))
	for i, f := range e.Failed {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Failed)-3)
			break
		}
		fmt.Fprintf(&b, "; #%d (id %s): %v", f.Index, f.ID, f.Err)
	}
	return b.String()
}

// Unwrap returns the distinct causes, so errors.Is(err, ErrMessageTooLarge)
// holds when any failed message was too large.
func (e *PublishError) Unwrap() []error {
	errs := make([]error, 0, len(e.Failed))
	for _, f := range e.Failed {
		errs = append(errs, f.Err)
	}
	return errs
}

// PanicError is the error a handler's panic becomes, so that the message is
// redelivered instead of the process dying.
type PanicError struct {
	// Value is what the handler panicked with.
	Value any
	// Stack is the panicking goroutine's stack trace.
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("broker: handler panicked: %v\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
