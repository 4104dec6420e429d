package sqsbroker

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/dlq"
)

// Message attribute names the adapter sets on every message it sends. Any
// other message attribute of a received message becomes a header.
const (
	// AttrID carries broker.Message.ID.
	AttrID = "brokerkit-id"
	// AttrKey carries broker.Message.Key; absent when the Key is empty.
	AttrKey = "brokerkit-key"
	// AttrBodyEncoding says how the SQS body encodes broker.Message.Body when
	// it is not the body itself: BodyBase64 or BodyEmpty. Absent otherwise.
	AttrBodyEncoding = "brokerkit-body-encoding"
	// AttrHeaders is the header envelope, a Binary attribute, used instead of
	// one attribute per header when the headers do not fit SQS attributes.
	AttrHeaders = "brokerkit-headers"
)

// Values of AttrBodyEncoding.
const (
	// BodyBase64: the SQS body is the standard base64 encoding of the body,
	// used when the body is not text that SQS accepts (valid UTF-8 without
	// most control characters).
	BodyBase64 = "base64"
	// BodyEmpty: the body is empty (SQS requires a non-empty one, so "-" is sent).
	BodyEmpty = "empty"
)

// headerEnvelopeVersion is the first byte of an AttrHeaders value.
const headerEnvelopeVersion = 1

const (
	// maxAttributes is the SQS limit on message attributes per message.
	maxAttributes = 10
	// sizeReserve is what MaxMessageSize keeps back from the SQS limit for
	// attribute names and data types: "brokerkit-id", "brokerkit-key" and a
	// few header attributes, or the envelope's per-header length prefixes.
	sizeReserve = 1024
	// maxPublishBatch is the SQS limit on entries per SendMessageBatch and
	// DeleteMessageBatch.
	maxPublishBatch = 10
)

const reservedPrefix = "brokerkit-"

// outgoing is one message encoded for SendMessageBatch.
type outgoing struct {
	index int // position in the msgs passed to Send
	id    string
	group string // MessageGroupId on FIFO queues
	entry types.SendMessageBatchRequestEntry
	size  int // bytes SQS counts: body plus attribute names, types and values
}

// encode turns m into a batch entry for a queue. It fails with an error
// wrapping broker.ErrMessageTooLarge when the encoding exceeds limit bytes.
func encode(index int, m *broker.Message, fifo bool, limit int) (outgoing, error) {
	attrs := make(map[string]types.MessageAttributeValue, 4)
	size := 0
	str := func(name, value string) {
		attrs[name] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(value)}
		size += len(name) + len("String") + len(value)
	}
	var body string
	switch {
	case len(m.Body) == 0:
		body = "-"
		str(AttrBodyEncoding, BodyEmpty)
	case sqsText(m.Body):
		body = string(m.Body)
	default:
		body = base64.StdEncoding.EncodeToString(m.Body)
		str(AttrBodyEncoding, BodyBase64)
	}
	size += len(body)
	if sqsString(m.ID) {
		str(AttrID, m.ID)
	} else {
		env := appendEnvelope(nil, map[string]string{"": m.ID})
		attrs[AttrID] = types.MessageAttributeValue{DataType: aws.String("Binary"), BinaryValue: env}
		size += len(AttrID) + len("Binary") + len(env)
	}
	if m.Key != "" {
		if sqsString(m.Key) {
			str(AttrKey, m.Key)
		} else {
			env := appendEnvelope(nil, map[string]string{"": m.Key})
			attrs[AttrKey] = types.MessageAttributeValue{DataType: aws.String("Binary"), BinaryValue: env}
			size += len(AttrKey) + len("Binary") + len(env)
		}
	}
	if len(m.Headers) > 0 {
		if headersFitAttributes(m.Headers, maxAttributes-len(attrs)) {
			for k, v := range m.Headers {
				str(k, v)
			}
		} else {
			env := appendEnvelope(nil, m.Headers)
			attrs[AttrHeaders] = types.MessageAttributeValue{DataType: aws.String("Binary"), BinaryValue: env}
			size += len(AttrHeaders) + len("Binary") + len(env)
		}
	}
	if size > limit {
		return outgoing{}, fmt.Errorf("message #%d (id %q) encodes to %d bytes, over the SQS limit of %d: %w",
			index, m.ID, size, limit, broker.ErrMessageTooLarge)
	}
	o := outgoing{index: index, id: m.ID, size: size, entry: types.SendMessageBatchRequestEntry{
		Id:                aws.String(strconv.Itoa(index)),
		MessageBody:       aws.String(body),
		MessageAttributes: attrs,
	}}
	if fifo {
		o.group = groupID(m)
		o.entry.MessageGroupId = aws.String(o.group)
		o.entry.MessageDeduplicationId = aws.String(deduplicationID(m))
	}
	return o, nil
}

// groupID is the MessageGroupId of m on a FIFO queue: its Key, or, for an
// empty Key (no order asked for), its ID, so that unkeyed messages are
// independent instead of queueing behind each other in one group.
func groupID(m *broker.Message) string {
	if m.Key == "" {
		return fifoID(m.ID)
	}
	return fifoID(m.Key)
}

// deduplicationID is the MessageDeduplicationId of m: its ID, so that SQS
// drops a re-publish of the same message within its 5-minute window. A copy
// sent back by dlq.Redrive keeps its original ID; its redrive count makes it a
// new message, which SQS would otherwise drop as a duplicate of the original.
func deduplicationID(m *broker.Message) string {
	if n := m.Headers[dlq.HeaderRedriveCount]; n != "" {
		return fifoID(m.ID + "/redrive-" + n)
	}
	return fifoID(m.ID)
}

// headersFitAttributes reports whether h can travel as one String attribute
// per header: few enough, names SQS accepts and the adapter does not use, and
// non-empty values SQS accepts.
func headersFitAttributes(h map[string]string, room int) bool {
	if len(h) > room {
		return false
	}
	for k, v := range h {
		if !attributeName(k) || v == "" || !sqsString(v) {
			return false
		}
	}
	return true
}

// attributeName reports whether name is a valid SQS message attribute name
// that the adapter does not reserve.
func attributeName(name string) bool {
	if name == "" || len(name) > 256 || name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return false
	}
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "aws.") || strings.HasPrefix(lower, "amazon.") || strings.HasPrefix(lower, reservedPrefix) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// sqsText reports whether b can be an SQS message body as is: valid UTF-8 of
// the characters SQS allows (#x9 #xA #xD, #x20-#xD7FF, #xE000-#xFFFD,
// #x10000-#x10FFFF).
func sqsText(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 || r > 0xD7FF && r < 0xE000 || r == 0xFFFE || r == 0xFFFF {
			return false
		}
		i += n
	}
	return true
}

func sqsString(s string) bool { return s != "" && sqsText([]byte(s)) }

// appendEnvelope appends the AttrHeaders encoding of h to dst: the version
// byte 1, then for each header in name order the uvarint length of the name,
// the name, the uvarint length of the value and the value. Names and values
// are arbitrary bytes.
func appendEnvelope(dst []byte, h map[string]string) []byte {
	dst = append(dst, headerEnvelopeVersion)
	for _, k := range slices.Sorted(maps.Keys(h)) {
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = binary.AppendUvarint(dst, uint64(len(h[k])))
		dst = append(dst, h[k]...)
	}
	return dst
}

var errEnvelope = errors.New("malformed header envelope")

func parseEnvelope(b []byte) (map[string]string, error) {
	if len(b) == 0 || b[0] != headerEnvelopeVersion {
		return nil, errEnvelope
	}
	b = b[1:]
	h := map[string]string{}
	next := func() (string, bool) {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return "", false
		}
		s := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return s, true
	}
	for len(b) > 0 {
		k, ok1 := next()
		v, ok2 := next()
		if !ok1 || !ok2 {
			return nil, errEnvelope
		}
		h[k] = v
	}
	return h, nil
}

// attrString reads a String attribute, or the single value of a Binary
// envelope (how IDs and Keys that SQS strings cannot carry are sent).
func attrString(attrs map[string]types.MessageAttributeValue, name string) (string, bool) {
	a, ok := attrs[name]
	if !ok {
		return "", false
	}
	if a.StringValue != nil {
		return *a.StringValue, true
	}
	if h, err := parseEnvelope(a.BinaryValue); err == nil {
		v, ok := h[""]
		return v, ok
	}
	return "", false
}

// decode turns a received SQS message into a broker.Message. A message that
// was not sent by this adapter keeps its body as is, takes its ID from the
// SQS MessageId and its Key from the MessageGroupId, and gets its String and
// Number attributes as headers.
func decode(topic string, sm types.Message) (*broker.Message, error) {
	m := &broker.Message{Topic: topic, Native: sm}
	id, ours := attrString(sm.MessageAttributes, AttrID)
	if ours {
		m.ID = id
		m.Key, _ = attrString(sm.MessageAttributes, AttrKey)
	} else {
		m.ID = aws.ToString(sm.MessageId)
		m.Key = sm.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
	}
	body := aws.ToString(sm.Body)
	var err error
	switch enc, _ := attrString(sm.MessageAttributes, AttrBodyEncoding); enc {
	case BodyEmpty:
	case BodyBase64:
		m.Body, err = base64.StdEncoding.DecodeString(body)
		if err != nil {
			err = fmt.Errorf("message %s: body marked %s=%s does not decode: %w", m.ID, AttrBodyEncoding, enc, err)
			m.Body = []byte(body)
		}
	default:
		m.Body = []byte(body)
	}
	if env, ok := sm.MessageAttributes[AttrHeaders]; ok {
		h, perr := parseEnvelope(env.BinaryValue)
		if perr != nil {
			err = errors.Join(err, fmt.Errorf("message %s: attribute %s: %w", m.ID, AttrHeaders, perr))
		}
		m.Headers = h
	} else {
		for k, a := range sm.MessageAttributes {
			if strings.HasPrefix(k, reservedPrefix) || a.StringValue == nil {
				continue
			}
			if m.Headers == nil {
				m.Headers = make(map[string]string, len(sm.MessageAttributes))
			}
			m.Headers[k] = *a.StringValue
		}
	}
	if n, perr := strconv.Atoi(sm.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)]); perr == nil {
		m.Attempt = n
	}
	if ms, perr := strconv.ParseInt(sm.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); perr == nil {
		m.PublishedAt = time.UnixMilli(ms)
	}
	return m, err
}
