package sqsbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/brokerkit/broker"
)

func TestWrap(t *testing.T) {
	op := func(err error) error {
		return &smithy.OperationError{ServiceID: "SQS", OperationName: "SendMessageBatch", Err: err}
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"queue does not exist (JSON protocol)", op(&types.QueueDoesNotExist{Message: aws.String("nope")}), broker.ErrNotFound},
		{"queue does not exist (qualified code)", op(&types.QueueDoesNotExist{ErrorCodeOverride: aws.String("com.amazonaws.sqs#QueueDoesNotExist")}), broker.ErrNotFound},
		{"queue does not exist (query code)", op(&smithy.GenericAPIError{Code: "AWS.SimpleQueueService.NonExistentQueue"}), broker.ErrNotFound},
		{"throttled", op(&types.RequestThrottled{}), broker.ErrUnavailable},
		{"throttling", op(&smithy.GenericAPIError{Code: "Throttling"}), broker.ErrUnavailable},
		{"server fault", op(&smithy.GenericAPIError{Code: "Whatever", Fault: smithy.FaultServer}), broker.ErrUnavailable},
		{"over limit", op(&types.OverLimit{}), broker.ErrFull},
		{"invalid attribute", op(&types.InvalidAttributeValue{}), broker.ErrInvalidArgument},
		{"invalid parameter", op(&smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "bad"}), broker.ErrInvalidArgument},
		{"too long (AWS)", op(&smithy.GenericAPIError{Code: "InvalidParameterValue",
			Message: "One or more parameters are invalid. Reason: Message must be shorter than 262144 bytes."}), broker.ErrMessageTooLarge},
		{"too long (ElasticMQ)", op(&types.InvalidAttributeValue{Message: aws.String("MessageTooLong")}), broker.ErrMessageTooLarge},
		{"batch too long", op(&types.BatchRequestTooLong{}), broker.ErrMessageTooLarge},
		{"access denied", op(&smithy.GenericAPIError{Code: "AccessDenied"}), broker.ErrPermissionDenied},
		{"bad signature", op(&smithy.GenericAPIError{Code: "SignatureDoesNotMatch"}), broker.ErrPermissionDenied},
		{"unsupported", op(&types.UnsupportedOperation{}), broker.ErrUnsupported},
		{"connection refused", op(&net.OpError{Op: "dial", Err: errors.New("connection refused")}), broker.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := wrap("publish to", "orders", tc.err)
			if !errors.Is(err, tc.want) {
				t.Errorf("wrap(%v) = %v, want %v", tc.err, err, tc.want)
			}
			var oe *smithy.OperationError
			if !errors.As(err, &oe) {
				t.Errorf("errors.As cannot reach the SDK error in %v", err)
			}
		})
	}
	var nf *types.QueueDoesNotExist
	if err := wrap("x", "t", op(&types.QueueDoesNotExist{})); !errors.As(err, &nf) {
		t.Errorf("errors.As(*types.QueueDoesNotExist) failed on %v", err)
	}
	if err := wrap("x", "t", op(&smithy.GenericAPIError{Code: "SomethingNew", Fault: smithy.FaultClient})); !broker.IsRetryable(err) || errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("an unknown client error got a sentinel: %v", err)
	}
	if err := wrap("x", "t", op(&smithy.CanceledError{Err: context.Canceled})); err != context.Canceled {
		t.Errorf("context error wrapped: %v", err)
	}
	if err := wrap("x", "t", fmt.Errorf("op: %w", context.DeadlineExceeded)); err != context.DeadlineExceeded {
		t.Errorf("context error wrapped: %v", err)
	}
}

func TestEntryError(t *testing.T) {
	err := entryError("publish to", "orders", "InvalidMessageContents", "bad chars", true)
	var ae smithy.APIError
	if !errors.Is(err, broker.ErrInvalidArgument) || !errors.As(err, &ae) || ae.ErrorCode() != "InvalidMessageContents" {
		t.Errorf("entryError = %v", err)
	}
	if err := entryError("publish to", "orders", "InternalError", "", false); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("server-side entry failure = %v, want ErrUnavailable", err)
	}
}
