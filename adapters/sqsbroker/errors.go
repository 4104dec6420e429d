package sqsbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/brokerkit/broker"
)

// errorCodes maps SQS error codes, as the SDK reports them in
// smithy.APIError.ErrorCode (JSON-protocol names, their query-protocol
// equivalents, and the generic AWS ones), to the brokerkit sentinels. Codes
// not listed are classified by fault: server faults are ErrUnavailable,
// client faults get no sentinel.
var errorCodes = map[string]error{
	"QueueDoesNotExist":                       broker.ErrNotFound,
	"AWS.SimpleQueueService.NonExistentQueue": broker.ErrNotFound,
	"ResourceNotFoundException":               broker.ErrNotFound,

	"RequestThrottled":        broker.ErrUnavailable,
	"Throttling":              broker.ErrUnavailable,
	"ThrottlingException":     broker.ErrUnavailable,
	"KmsThrottled":            broker.ErrUnavailable,
	"ServiceUnavailable":      broker.ErrUnavailable,
	"InternalFailure":         broker.ErrUnavailable,
	"InternalError":           broker.ErrUnavailable,
	"QueueDeletedRecently":    broker.ErrUnavailable,
	"PurgeQueueInProgress":    broker.ErrUnavailable,
	"RequestTimeout":          broker.ErrUnavailable,
	"RequestTimeoutException": broker.ErrUnavailable,

	"OverLimit": broker.ErrFull,

	"BatchRequestTooLong": broker.ErrMessageTooLarge,
	"MessageTooLong":      broker.ErrMessageTooLarge,

	"InvalidAttributeName":                   broker.ErrInvalidArgument,
	"InvalidAttributeValue":                  broker.ErrInvalidArgument,
	"InvalidParameterValue":                  broker.ErrInvalidArgument,
	"InvalidParameterCombination":            broker.ErrInvalidArgument,
	"MissingParameter":                       broker.ErrInvalidArgument,
	"InvalidMessageContents":                 broker.ErrInvalidArgument,
	"InvalidBatchEntryId":                    broker.ErrInvalidArgument,
	"BatchEntryIdsNotDistinct":               broker.ErrInvalidArgument,
	"EmptyBatchRequest":                      broker.ErrInvalidArgument,
	"TooManyEntriesInBatchRequest":           broker.ErrInvalidArgument,
	"InvalidIdFormat":                        broker.ErrInvalidArgument,
	"ReceiptHandleIsInvalid":                 broker.ErrInvalidArgument,
	"MessageNotInflight":                     broker.ErrInvalidArgument,
	"InvalidAddress":                         broker.ErrInvalidArgument,
	"QueueNameExists":                        broker.ErrInvalidArgument,
	"AWS.SimpleQueueService.QueueNameExists": broker.ErrInvalidArgument,

	"AccessDenied":                broker.ErrPermissionDenied,
	"AccessDeniedException":       broker.ErrPermissionDenied,
	"InvalidSecurity":             broker.ErrPermissionDenied,
	"InvalidClientTokenId":        broker.ErrPermissionDenied,
	"UnrecognizedClientException": broker.ErrPermissionDenied,
	"SignatureDoesNotMatch":       broker.ErrPermissionDenied,
	"IncompleteSignature":         broker.ErrPermissionDenied,
	"ExpiredToken":                broker.ErrPermissionDenied,
	"MissingAuthenticationToken":  broker.ErrPermissionDenied,
	"KmsAccessDenied":             broker.ErrPermissionDenied,
	"KmsDisabled":                 broker.ErrPermissionDenied,
	"KmsInvalidKeyUsage":          broker.ErrPermissionDenied,
	"KmsInvalidState":             broker.ErrPermissionDenied,
	"KmsNotFound":                 broker.ErrPermissionDenied,
	"KmsOptInRequired":            broker.ErrPermissionDenied,

	"UnsupportedOperation": broker.ErrUnsupported,
}

// errorCode normalises an SDK error code: servers speaking the JSON protocol
// may qualify it ("com.amazonaws.sqs#QueueDoesNotExist"), and the query
// compatibility header may append the fault ("...;Sender").
func errorCode(code string) string {
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	if i := strings.IndexByte(code, ';'); i >= 0 {
		code = code[:i]
	}
	return code
}

// tooLong reports whether an error message says the message or batch is over
// the size limit; SQS reports that as InvalidParameterValue (AWS) or
// InvalidAttributeValue "MessageTooLong" (ElasticMQ).
func tooLong(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "messagetoolong") || strings.Contains(msg, "must be shorter than") ||
		strings.Contains(msg, "too long")
}

// sentinel returns the brokerkit sentinel for code (normalised or not),
// message and fault; nil when none applies.
func sentinel(code, message string, fault smithy.ErrorFault) error {
	s := errorCodes[errorCode(code)]
	if (s == nil || s == broker.ErrInvalidArgument) && tooLong(message) {
		return broker.ErrMessageTooLarge
	}
	if s == nil && fault == smithy.FaultServer {
		return broker.ErrUnavailable
	}
	return s
}

// classify returns the sentinel for an error from the SDK, or nil.
func classify(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if s := sentinel(ae.ErrorCode(), ae.ErrorMessage(), ae.ErrorFault()); s != nil {
			return s
		}
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			switch code := re.HTTPStatusCode(); {
			case code == 403 || code == 401:
				return broker.ErrPermissionDenied
			case code >= 500 || code == 429:
				return broker.ErrUnavailable
			}
		}
		return nil
	}
	var pe smithy.InvalidParamsError
	if errors.As(err, &pe) {
		return broker.ErrInvalidArgument
	}
	// No answer from SQS: connection refused, reset, timeout, retries used up.
	return broker.ErrUnavailable
}

// wrap describes a failed SDK call: op and topic, the sentinel from classify,
// and the SDK error, so that both errors.Is(err, broker.ErrNotFound) and
// errors.As(err, &*types.QueueDoesNotExist) work. Context errors are returned
// unwrapped.
func wrap(op, topic string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	}
	if s := classify(err); s != nil {
		return fmt.Errorf("sqs: %s %q: %w: %w", op, topic, s, err)
	}
	return fmt.Errorf("sqs: %s %q: %w", op, topic, err)
}

// entryError is the error for one failed entry of a batch call.
func entryError(op, topic string, code, message string, senderFault bool) error {
	fault := smithy.FaultServer
	if senderFault {
		fault = smithy.FaultClient
	}
	native := &smithy.GenericAPIError{Code: code, Message: message, Fault: fault}
	if s := sentinel(code, message, fault); s != nil {
		return fmt.Errorf("sqs: %s %q: %w: %w", op, topic, s, native)
	}
	return fmt.Errorf("sqs: %s %q: %w", op, topic, native)
}
