package kafkabroker

import (
	"bytes"
	"strconv"
	"unsafe"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
	"github.com/segmentio/kafka-go"
)

// received is one fetched message, allocated with the others of its run:
// its delivery, its portable message, and what else of the record As needs to
// rebuild it (its entry has the partition and the offset). Keeping the
// kafka.Message itself instead would cost 150 bytes more per message, for a
// value few handlers ask for.
type received struct {
	delivery      driver.Delivery // Handle is the *entry
	msg           broker.Message
	highWaterMark int64
	headers       []kafka.Header // the record's headers, the ID among them, in their order
}

// fill converts a fetched record into r, a zero received, with e as its
// offset entry, and makes r the message's Native value.
func (r *received) fill(km *kafka.Message, e *entry) {
	fromKafka(&r.msg, km)
	r.msg.Native = r
	r.delivery.Message = &r.msg
	r.delivery.Handle = e
	e.partition, e.offset = int32(km.Partition), km.Offset
	r.highWaterMark, r.headers = km.HighWaterMark, km.Headers
}

func (r *received) entry() *entry { return r.delivery.Handle.(*entry) }

// As sets a *kafka.Message or **kafka.Message target to the record the
// message was received as: a new kafka.Message each call, with its own copies
// of the key and the headers. Its Value is the message's Body.
func (r *received) As(target any) bool {
	switch t := target.(type) {
	case *kafka.Message:
		*t = r.record()
	case **kafka.Message:
		km := r.record()
		*t = &km
	default:
		return false
	}
	return true
}

func (r *received) record() kafka.Message {
	e := r.entry()
	km := kafka.Message{
		Topic:         r.msg.Topic,
		Partition:     int(e.partition),
		Offset:        e.offset,
		HighWaterMark: r.highWaterMark,
		Value:         r.msg.Body,
		Time:          r.msg.PublishedAt,
	}
	if r.msg.Key != "" {
		km.Key = []byte(r.msg.Key)
	}
	if len(r.headers) > 0 {
		km.Headers = make([]kafka.Header, len(r.headers))
		for i, h := range r.headers {
			km.Headers[i] = kafka.Header{Key: h.Key, Value: bytes.Clone(h.Value)}
		}
	}
	return km
}

// fromKafka fills m, a zero message, from a fetched record, the inverse of
// records.fill on the publishing side.
//
// m's ID, Key and header values share their bytes with the record's key and
// header values instead of copying them. The fetcher copies the key out of
// kafka-go's buffers and kafka-go allocates each header value; nothing else
// keeps a reference, and nothing may write to them (As hands out copies).
func fromKafka(m *broker.Message, km *kafka.Message) {
	m.Key = bytesString(km.Key)
	m.Body = km.Value
	m.Topic = km.Topic
	m.Attempt = 1
	m.PublishedAt = km.Time
	for _, h := range km.Headers {
		if h.Key == HeaderID {
			m.ID = bytesString(h.Value)
			continue
		}
		if m.Headers == nil {
			m.Headers = make(map[string]string, len(km.Headers))
		}
		m.Headers[h.Key] = bytesString(h.Value)
	}
	if m.ID == "" {
		m.ID = km.Topic + "/" + strconv.Itoa(km.Partition) + "/" + strconv.FormatInt(km.Offset, 10)
	}
}

// bytesString is b as a string without a copy; b must never change after.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
