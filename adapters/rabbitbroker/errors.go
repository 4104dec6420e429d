package rabbitbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
)

// errorCodes maps AMQP reply codes to the root sentinels. Codes not listed
// (channel or connection errors, internal errors, a forced close) mean the
// broker could not serve the call now: ErrUnavailable, retryable.
var errorCodes = map[int]error{
	amqp.NotFound:           broker.ErrNotFound,         // 404: no such exchange or queue
	amqp.NoRoute:            broker.ErrNotFound,         // 312: a mandatory message reached no queue
	amqp.AccessRefused:      broker.ErrPermissionDenied, // 403: credentials, vhost or resource permissions
	amqp.NotAllowed:         broker.ErrPermissionDenied, // 530: e.g. vhost access, connection limit
	amqp.PreconditionFailed: broker.ErrInvalidArgument,  // 406: topology declared with other arguments
	amqp.ContentTooLarge:    broker.ErrMessageTooLarge,  // 311
	amqp.FrameError:         broker.ErrUnavailable,      // 501: also how amqp091 reports a broken socket (EOF)
	amqp.ConnectionForced:   broker.ErrUnavailable,      // 320: the broker is shutting down or an operator closed us
	amqp.ResourceLocked:     broker.ErrUnavailable,      // 405: held by another connection for now
	amqp.ResourceError:      broker.ErrUnavailable,      // 506: the broker is out of a resource
	amqp.ChannelError:       broker.ErrUnavailable,      // 504: the channel or connection is closed
	amqp.NotImplemented:     broker.ErrUnsupported,      // 540
	amqp.InternalError:      broker.ErrUnavailable,      // 541
	amqp.CommandInvalid:     broker.ErrUnavailable,      // 503
	amqp.SyntaxError:        broker.ErrInvalidArgument,  // 502
	amqp.InvalidPath:        broker.ErrInvalidArgument,  // 402
	amqp.UnexpectedFrame:    broker.ErrUnavailable,      // 505
	amqp.NoConsumers:        broker.ErrUnavailable,      // 313
}

// sentinel returns the root sentinel for err: the table entry for an AMQP
// error, ErrUnavailable for network errors and anything unclassified.
func sentinel(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		if ae.Code == amqp.PreconditionFailed && isSizeLimit(ae.Reason) {
			return broker.ErrMessageTooLarge
		}
		if s, ok := errorCodes[ae.Code]; ok {
			return s
		}
	}
	return broker.ErrUnavailable
}

// isSizeLimit reports whether a 406 reply is RabbitMQ's max_message_size check.
func isSizeLimit(reason string) bool {
	return strings.Contains(reason, "larger than configured max size")
}

// wrap returns err wrapped twice, so that errors.Is finds the root sentinel and
// errors.As finds the amqp091 error: "amqp: <what>: <sentinel>: <native>".
// Context errors are returned unwrapped.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	for _, s := range []error{broker.ErrClosed, broker.ErrUnavailable, broker.ErrNotFound, broker.ErrPermissionDenied,
		broker.ErrInvalidArgument, broker.ErrMessageTooLarge, broker.ErrUnsupported} {
		if errors.Is(err, s) { // already classified by this package
			return fmt.Errorf("amqp: %s: %w", what, err)
		}
	}
	return fmt.Errorf("amqp: %s: %w: %w", what, sentinel(err), scrub(err))
}

// unavailable wraps err as ErrUnavailable whatever its code: used where the
// outcome is unknown (a channel closed before a confirm) and a retry is right.
func unavailable(what string, err error) error {
	if err == nil {
		return fmt.Errorf("amqp: %s: %w", what, broker.ErrUnavailable)
	}
	return fmt.Errorf("amqp: %s: %w: %w", what, broker.ErrUnavailable, scrub(err))
}

// scrub keeps credentials out of errors: amqp091 and net errors never carry
// the password, but a *url.Error from parsing the URI would, so it is cut to
// its cause.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("malformed AMQP URI: %v", ue.Err)
	}
	return err
}

// isFatal reports whether err is one that reconnecting cannot fix: a topology
// mismatch, missing permissions, an unsupported request.
func isFatal(err error) bool {
	return errors.Is(err, broker.ErrInvalidArgument) || errors.Is(err, broker.ErrPermissionDenied) ||
		errors.Is(err, broker.ErrUnsupported) || errors.Is(err, broker.ErrClosed)
}
