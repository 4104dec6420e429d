// Package dlq is about dead letters: the headers a dead-lettered message
// carries, and tools to inspect parked messages and send them back.
//
// Every consumer built on package driver dead-letters by itself: after
// ConsumerOptions.MaxAttempts failed attempts, or at once for a
// broker.Permanent error, it publishes a copy of the message to the
// dead-letter topic (by default "<topic>.dlq") with the headers below, and
// only then acknowledges the original. If that publish fails the original is
// not acknowledged and comes back, so a message is never lost on the way.
package dlq

// Header keys set on a dead-lettered copy. All values are strings; times are
// RFC 3339 with nanoseconds, in UTC.
const (
	// HeaderOriginalTopic is the topic the message was consumed from.
	HeaderOriginalTopic = "x-dlq-original-topic"
	// HeaderGroup is the consumer group that gave up on it.
	HeaderGroup = "x-dlq-group"
	// HeaderAttempts is how many times it was handled, in decimal.
	HeaderAttempts = "x-dlq-attempts"
	// HeaderReason is the last handler error's text.
	HeaderReason = "x-dlq-reason"
	// HeaderPermanent is "true" when the handler marked the error permanent.
	HeaderPermanent = "x-dlq-permanent"
	// HeaderFirstFailedAt is when the first failed attempt seen by the
	// consumer that dead-lettered it ended.
	HeaderFirstFailedAt = "x-dlq-first-failed-at"
	// HeaderLastFailedAt is when the last failed attempt ended.
	HeaderLastFailedAt = "x-dlq-last-failed-at"
	// HeaderOriginalID is the message's ID when it was dead-lettered, set on
	// the copies that Peek and Redrive put back at the tail of the topic.
	HeaderOriginalID = "x-dlq-original-id"
	// HeaderRedriveCount counts how many times the message was sent back from a
	// dead-letter topic to its original topic.
	HeaderRedriveCount = "x-dlq-redrive-count"
)
