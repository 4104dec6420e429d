// Package sqsbroker is the Amazon SQS adapter, on aws-sdk-go-v2. Importing it
// registers the "sqs" URL scheme. It runs against AWS and against
// SQS-compatible servers such as ElasticMQ.
//
// # URLs
//
//	sqs://?region=us-east-1&endpoint=http://127.0.0.1:9324&create_queues=true&<options>
//
// Credentials always come from the AWS default chain (environment, shared
// config files, SSO, container or instance role), never from the URL: a URL
// with user information is refused. region overrides the chain's region;
// endpoint points the client at a local server. The other parameters set
// Options: create_queues, visibility_timeout, wait_time, pollers,
// publish_concurrency, max_message_size, max_receive_count; and the consumer
// options every adapter understands (group, concurrency, order_by_key,
// max_attempts, backoff_min, backoff_max, drain_timeout, dead_letter_topic).
// Unknown parameters are an error. New takes an *sqs.Client instead, for full
// control of the AWS configuration.
//
// # Topics and queues
//
// A topic is a queue, named by QueueName: a topic ending in ".fifo" is a FIFO
// queue, dots elsewhere become dashes (SQS names allow only letters, digits,
// '-' and '_'), and the dead-letter topic "<topic>.dlq" is the queue
// "<topic>-dlq", or "<name>-dlq.fifo" for the FIFO topic "<name>.fifo". A topic
// may also be a queue URL, for queues in other accounts. Queue URLs are looked
// up once and cached. A missing queue is an error wrapping broker.ErrNotFound,
// unless create_queues is set: the adapter then creates the queue's dead-letter
// queue (message retention 14 days) and the queue, with a RedrivePolicy to it.
// Broker.CreateQueue does the same on demand.
//
// # Messages
//
// The body is the SQS message body when it is text SQS accepts; otherwise it
// is sent base64-encoded, and an empty body as "-", marked by the
// AttrBodyEncoding attribute. The ID and Key travel as the attributes AttrID
// and AttrKey. Headers travel as one String attribute each, so other SQS
// consumers can read them, when they fit: SQS allows 10 attributes per
// message, names of letters, digits, '-', '_' and '.', and non-empty text
// values. Otherwise all headers go in one Binary attribute, AttrHeaders: the
// byte 1, then for each header in name order the uvarint length and bytes of
// the name, then of the value. Messages from other producers keep their body,
// take their ID from the SQS MessageId and their Key from the MessageGroupId,
// and get their String and Number attributes as headers.
//
// SQS limits a message and a batch to 256 KiB by default (up to 1 MiB when
// the queue allows it; see Options.MaxMessageSize), counting the body and the
// attribute names, types and values. Publishers accept a broker.Message.Size
// up to 1 KiB below that limit, and measure the exact encoding of every
// message before sending any, so a binary body (a third larger once
// base64-encoded) or very many headers fail with broker.ErrMessageTooLarge,
// never at SQS.
//
// # Delivery semantics
//
// Publish sends SendMessageBatch calls of up to 10 messages within the byte
// limit, several at once (PublishConcurrency). It returns nil once SQS has
// accepted every message; failed entries come back in a *broker.PublishError
// naming them. On FIFO queues the MessageGroupId is the Key, so SQS keeps the
// order of one Key; a message without a Key asks for no order and gets its ID
// as group, so unkeyed messages never wait behind each other. Publish keeps
// the order of each group across its batches, and does not send the rest of a
// group in later batches after one of its messages failed (SQS may accept
// later entries of the same batch). The MessageDeduplicationId is the
// message ID: SQS drops a message whose ID it saw on the queue in the last 5
// minutes, which makes a retried Publish safe; to send the same message again
// on purpose, give it a new ID. Copies sent back by dlq.Redrive keep their ID
// and are not dropped: their redrive count is part of the deduplication ID.
// Content-based deduplication is off on the queues the adapter creates.
//
// A consumer keeps up to Pollers long-polling ReceiveMessage calls in flight
// and never holds more messages than its prefetch window (twice its
// Concurrency), so messages it cannot work on soon stay available to other
// consumers. A receive hides its messages for 5 seconds (or
// VisibilityTimeout, if shorter); a message held longer than half that is
// extended to VisibilityTimeout, and kept extended while it is held, so a
// long handler does not see it redelivered elsewhere. The first lease is
// short because SQS can still hand messages to a long poll whose client has
// gone (the consumer stopped mid-poll, the process died): those messages
// come back within 5 seconds instead of a whole VisibilityTimeout. A message
// whose consumer dies while handling it comes back after VisibilityTimeout.
// Acknowledged messages are deleted with DeleteMessageBatch (at once in tens,
// or after 10 ms), and the pending deletes are flushed when the consumer
// closes. A failed message is made visible again after the backoff delay with
// ChangeMessageVisibility (rounded up to whole seconds), so a retry neither
// spins nor blocks other messages. Attempt is the ApproximateReceiveCount; a
// message handed back unhandled at shutdown counts as a receive too.
// PublishedAt is the SentTimestamp, to the millisecond.
//
// Consumers of a queue compete: SQS has no fan-out, so a consumer whose Group
// is not broker.DefaultGroup fails with broker.ErrUnsupported (use one queue
// per group, fed by SNS). OrderByKey needs a FIFO queue and fails at start with
// broker.ErrUnsupported on a standard queue. A FIFO queue delivers no message
// of a group while another of the group is in flight, and the consumer handles
// messages of one Key in order, retrying a failed one before the next.
//
// Dead letters: after MaxAttempts, or at once for a broker.Permanent error,
// the consumer publishes a copy with the dlq headers to the dead-letter topic
// and then deletes the original. The RedrivePolicy on the queues the adapter
// creates is the safety net for messages that never get that far, such as one
// that crashes the process each time: SQS moves a message once it was
// received MaxReceiveCount times (default 20, or twice MaxAttempts when a
// consumer creates the queue). It is kept well above MaxAttempts because
// receives that are not failed attempts also count: messages handed back at
// shutdown, retries of a failed dead-letter publish, redeliveries after a
// crash; at or below MaxAttempts SQS would park messages before the consumer
// could add its reason. A consumer warns at start when an existing queue's
// maxReceiveCount is not above MaxAttempts.
//
// Stats (on publishers and consumers): Depth and Lag are
// ApproximateNumberOfMessages plus ApproximateNumberOfMessagesDelayed (messages
// sent with a delay are waiting too); InFlight is
// ApproximateNumberOfMessagesNotVisible, which includes failed messages waiting
// out their retry delay; DeadLetters counts every message in the dead-letter
// queue; Consumers is -1, as SQS does not know it.
//
// Errors wrap a broker sentinel and the SDK error: a missing queue is
// broker.ErrNotFound, throttling and unreachable endpoints
// broker.ErrUnavailable, too many in-flight messages broker.ErrFull, invalid
// attributes and parameters broker.ErrInvalidArgument, oversized messages
// broker.ErrMessageTooLarge, refused credentials broker.ErrPermissionDenied;
// errors.As reaches the SDK's types, such as *types.QueueDoesNotExist or
// smithy.APIError.
//
// # As
//
// A received message's Native value is the SDK's types.Message, so
// Message.As accepts a *types.Message (from
// github.com/aws/aws-sdk-go-v2/service/sqs/types), with the receipt handle,
// the message and system attributes.
package sqsbroker
