// Package sqsbench compares the SQS adapter with raw aws-sdk-go-v2 on the
// same server (ElasticMQ in the test environment), in one run, with the same
// settings: 256-byte messages on a standard queue, SendMessageBatch of 10
// with 8 batches in flight, and 4 long-polling receivers of up to 10 messages
// that delete what they received in batches. A naive loop of one SendMessage
// per message shows what batching buys. The results and how to read them are
// in README.md.
package sqsbench
