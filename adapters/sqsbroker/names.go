package sqsbroker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/brokerkit/broker"
)

const (
	fifoSuffix = ".fifo"
	// maxQueueName is the SQS limit on a queue name, ".fifo" included.
	maxQueueName = 80
)

// QueueName returns the SQS queue name that topic is stored in, and whether
// that queue is FIFO. SQS names allow only letters, digits, '-' and '_' (and
// the ".fifo" suffix), so the mapping is:
//
//   - A topic is FIFO when it ends in ".fifo", or when ".fifo" is followed only
//     by ".dlq" suffixes: the dead-letter topic "orders.fifo.dlq" of the FIFO
//     topic "orders.fifo" is itself FIFO, as SQS requires of a FIFO queue's
//     dead-letter queue.
//   - That ".fifo" is taken out, every other '.' becomes '-', and ".fifo" is
//     put back at the end.
//
// So "orders" is "orders", "orders.dlq" is "orders-dlq", "orders.fifo" is
// "orders.fifo", "orders.fifo.dlq" is "orders-dlq.fifo", and
// "billing.events" is "billing-events" (the same queue as the topic
// "billing-events"). A topic that is an http(s) queue URL maps its last path
// segment the same way. Any other character, or a name over 80 characters,
// is an error wrapping broker.ErrInvalidArgument.
func QueueName(topic string) (name string, fifo bool, err error) {
	if isQueueURL(topic) {
		u, err := url.Parse(topic)
		if err != nil {
			return "", false, fmt.Errorf("sqs: topic %q is not a valid queue URL: %w", topic, broker.ErrInvalidArgument)
		}
		return QueueName(path.Base(u.Path))
	}
	base := topic
	dlqs := 0
	for strings.HasSuffix(base, broker.DeadLetterSuffix) {
		base = strings.TrimSuffix(base, broker.DeadLetterSuffix)
		dlqs++
	}
	fifo = strings.HasSuffix(base, fifoSuffix)
	if fifo {
		base = strings.TrimSuffix(base, fifoSuffix)
	} else {
		base = topic // only ".fifo" moves; plain ".dlq" suffixes are mapped like any dot
		dlqs = 0
	}
	name = strings.ReplaceAll(base+strings.Repeat(broker.DeadLetterSuffix, dlqs), ".", "-")
	if fifo {
		name += fifoSuffix
	}
	if err := validQueueName(name, fifo); err != nil {
		return "", false, fmt.Errorf("sqs: topic %q (queue %q): %s: %w", topic, name, err, broker.ErrInvalidArgument)
	}
	return name, fifo, nil
}

func validQueueName(name string, fifo bool) error {
	stem := strings.TrimSuffix(name, fifoSuffix)
	if !fifo {
		stem = name
	}
	if stem == "" {
		return fmt.Errorf("empty queue name")
	}
	if len(name) > maxQueueName {
		return fmt.Errorf("queue names are limited to %d characters", maxQueueName)
	}
	for _, r := range stem {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("character %q is not allowed: SQS queue names use letters, digits, '-' and '_'", r)
		}
	}
	return nil
}

// isQueueURL reports whether a topic is given as a queue URL.
func isQueueURL(topic string) bool {
	return strings.HasPrefix(topic, "https://") || strings.HasPrefix(topic, "http://")
}

// queueURLFor returns the URL for a URL topic, with its last segment mapped
// to the queue name (so that "<url>.dlq" addresses the dead-letter queue).
func queueURLFor(topic, name string) string {
	i := strings.LastIndexByte(topic, '/')
	return topic[:i+1] + name
}

// maxFIFOID is the SQS limit on MessageGroupId and MessageDeduplicationId.
const maxFIFOID = 128

// fifoID returns s when it is a valid MessageGroupId or MessageDeduplicationId
// (1 to 128 printable ASCII characters other than space), else "sha256-"
// followed by the hex SHA-256 of s.
func fifoID(s string) string {
	ok := len(s) > 0 && len(s) <= maxFIFOID
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] > ' ' && s[i] < 0x7f
	}
	if ok {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + hex.EncodeToString(sum[:])
}
