package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/brokerkit/broker"
	"github.com/segmentio/kafka-go"
)

// errorCodes maps the Kafka protocol error codes that have a clear meaning for
// a caller to the broker sentinels. Codes not listed are classified by
// kafka.Error.Temporary: retriable ones as broker.ErrUnavailable, the rest
// wrapped without a sentinel.
var errorCodes = map[kafka.Error]error{
	kafka.UnknownTopicOrPartition: broker.ErrNotFound,
	kafka.UnknownTopicID:          broker.ErrNotFound,
	kafka.GroupIdNotFound:         broker.ErrNotFound,

	kafka.InvalidTopic:             broker.ErrInvalidArgument,
	kafka.InvalidPartitionNumber:   broker.ErrInvalidArgument,
	kafka.InvalidReplicationFactor: broker.ErrInvalidArgument,
	kafka.InvalidConfiguration:     broker.ErrInvalidArgument,
	kafka.InvalidRequiredAcks:      broker.ErrInvalidArgument,
	kafka.InvalidGroupId:           broker.ErrInvalidArgument,
	kafka.InvalidSessionTimeout:    broker.ErrInvalidArgument,
	kafka.InvalidRecord:            broker.ErrInvalidArgument,
	kafka.InvalidTimestamp:         broker.ErrInvalidArgument,
	kafka.PolicyViolation:          broker.ErrInvalidArgument,

	kafka.MessageSizeTooLarge: broker.ErrMessageTooLarge,
	kafka.RecordListTooLarge:  broker.ErrMessageTooLarge,
	kafka.InvalidMessageSize:  broker.ErrMessageTooLarge,

	kafka.TopicAuthorizationFailed:           broker.ErrPermissionDenied,
	kafka.GroupAuthorizationFailed:           broker.ErrPermissionDenied,
	kafka.ClusterAuthorizationFailed:         broker.ErrPermissionDenied,
	kafka.TransactionalIDAuthorizationFailed: broker.ErrPermissionDenied,
	kafka.SASLAuthenticationFailed:           broker.ErrPermissionDenied,
	kafka.IllegalSASLState:                   broker.ErrPermissionDenied,
	kafka.BrokerAuthorizationFailed:          broker.ErrPermissionDenied,
	kafka.UnacceptableCredential:             broker.ErrPermissionDenied,

	kafka.UnsupportedSASLMechanism:   broker.ErrUnsupported,
	kafka.UnsupportedVersion:         broker.ErrUnsupported,
	kafka.UnsupportedCompressionType: broker.ErrUnsupported,
	kafka.SecurityDisabled:           broker.ErrUnsupported,

	kafka.GroupMaxSizeReached:     broker.ErrFull,
	kafka.ThrottlingQuotaExceeded: broker.ErrUnavailable,

	// Group membership churn: the member rejoins and the call can be retried.
	kafka.RebalanceInProgress: broker.ErrUnavailable,
	kafka.IllegalGeneration:   broker.ErrUnavailable,
	kafka.UnknownMemberId:     broker.ErrUnavailable,
}

// sentinel returns the broker sentinel err falls under, or nil when it is
// unclassified. Context errors have none: they are returned unwrapped.
func sentinel(err error) error {
	var ke kafka.Error
	if errors.As(err, &ke) {
		if s, ok := errorCodes[ke]; ok {
			return s
		}
		if ke.Temporary() {
			return broker.ErrUnavailable
		}
		return nil
	}
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return broker.ErrMessageTooLarge
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil
	case errors.Is(err, io.ErrClosedPipe):
		return broker.ErrClosed
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrNoProgress),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, net.ErrClosed), errors.Is(err, kafka.BrokerNotAvailable):
		return broker.ErrUnavailable
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return broker.ErrUnavailable
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return broker.ErrUnavailable
	}
	return nil
}

// wrap describes err from the operation op ("publish \"orders\"") and wraps
// it twice, so that errors.Is finds the sentinel and errors.As the kafka-go
// error. When ctx ended, a context error comes back unchanged; a timeout of
// kafka-go's own while ctx is alive means the broker did not answer in time
// and is wrapped as broker.ErrUnavailable. nil stays nil.
func wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("kafka: %s: %w: %w", op, broker.ErrUnavailable, err)
	}
	if s := sentinel(err); s != nil {
		return fmt.Errorf("kafka: %s: %w: %w", op, s, err)
	}
	return fmt.Errorf("kafka: %s: %w", op, err)
}

// unavailable is wrap for failures that, whatever their cause, mean from the
// caller's side a broker that did not answer (a group that could not be
// joined, a commit that did not go through): errors without a sentinel of
// their own are wrapped as broker.ErrUnavailable.
func unavailable(op string, err error) error {
	if err == nil {
		return nil
	}
	if sentinel(err) != nil {
		return wrap(context.Background(), op, err)
	}
	return fmt.Errorf("kafka: %s: %w: %w", op, broker.ErrUnavailable, err)
}
