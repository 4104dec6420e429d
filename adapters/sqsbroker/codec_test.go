package sqsbroker

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/dlq"
)

// received turns a sent entry into the message SQS would deliver.
func received(e types.SendMessageBatchRequestEntry) types.Message {
	return types.Message{
		MessageId:         aws.String("sqs-id"),
		Body:              e.MessageBody,
		MessageAttributes: e.MessageAttributes,
		Attributes: map[string]string{
			"ApproximateReceiveCount": "3",
			"SentTimestamp":           "1700000000123",
			"MessageGroupId":          aws.ToString(e.MessageGroupId),
		},
	}
}

func manyHeaders(n int) map[string]string {
	h := map[string]string{}
	for i := range n {
		h[fmt.Sprintf("h%d", i)] = fmt.Sprintf("v%d", i)
	}
	return h
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		m        broker.Message
		envelope bool
		encoding string
	}{
		{name: "text", m: broker.Message{ID: "id1", Key: "k", Body: []byte("héllo\n"), Headers: map[string]string{"content-type": "text/plain"}}},
		{name: "binary", m: broker.Message{ID: "id2", Body: []byte{0, 0xff, 0xfe, 'a'}}, encoding: BodyBase64},
		{name: "empty", m: broker.Message{ID: "id3"}, encoding: BodyEmpty},
		{name: "eight headers", m: broker.Message{ID: "id4", Key: "k", Body: []byte("x"), Headers: manyHeaders(8)}},
		{name: "nine headers", m: broker.Message{ID: "id5", Key: "k", Body: []byte("x"), Headers: manyHeaders(9)}, envelope: true},
		{name: "header name SQS refuses", m: broker.Message{ID: "id6", Body: []byte("x"), Headers: map[string]string{"a:b": "v"}}, envelope: true},
		{name: "empty header value", m: broker.Message{ID: "id7", Body: []byte("x"), Headers: map[string]string{"a": ""}}, envelope: true},
		{name: "control character and bad UTF-8", m: broker.Message{ID: "id8", Body: []byte("x"),
			Headers: map[string]string{"a": "\x00\x01", "b": "\xff\xfe", "ü": "ok"}}, envelope: true},
		{name: "reserved header name", m: broker.Message{ID: "id9", Body: []byte("x"), Headers: map[string]string{AttrID: "spoof"}}, envelope: true},
		{name: "odd ID and Key", m: broker.Message{ID: "id with space\x00", Key: "ключ\x01", Body: []byte("x")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := encode(4, &tc.m, true, DefaultMessageLimit)
			if err != nil {
				t.Fatal(err)
			}
			if aws.ToString(o.entry.Id) != "4" {
				t.Errorf("entry Id = %q, want the index", aws.ToString(o.entry.Id))
			}
			if len(o.entry.MessageAttributes) > maxAttributes {
				t.Errorf("%d attributes, over the SQS limit", len(o.entry.MessageAttributes))
			}
			if _, ok := o.entry.MessageAttributes[AttrHeaders]; ok != tc.envelope {
				t.Errorf("envelope used = %v, want %v", ok, tc.envelope)
			}
			if got, _ := attrString(o.entry.MessageAttributes, AttrBodyEncoding); got != tc.encoding {
				t.Errorf("body encoding = %q, want %q", got, tc.encoding)
			}
			if aws.ToString(o.entry.MessageBody) == "" || !sqsText([]byte(aws.ToString(o.entry.MessageBody))) {
				t.Errorf("body %q is not one SQS accepts", aws.ToString(o.entry.MessageBody))
			}
			for k, a := range o.entry.MessageAttributes {
				if a.StringValue != nil && !sqsString(*a.StringValue) {
					t.Errorf("attribute %q value %q is not one SQS accepts", k, *a.StringValue)
				}
			}
			got, err := decode("topic", received(o.entry))
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.m.ID || got.Key != tc.m.Key || !bytes.Equal(got.Body, tc.m.Body) {
				t.Errorf("decoded %q/%q/%q, want %q/%q/%q", got.ID, got.Key, got.Body, tc.m.ID, tc.m.Key, tc.m.Body)
			}
			if len(tc.m.Headers) > 0 && !maps.Equal(got.Headers, tc.m.Headers) || len(tc.m.Headers) == 0 && len(got.Headers) > 0 {
				t.Errorf("headers = %v, want %v", got.Headers, tc.m.Headers)
			}
			if got.Attempt != 3 || got.PublishedAt.UnixMilli() != 1700000000123 || got.Topic != "topic" {
				t.Errorf("Attempt %d, PublishedAt %v, Topic %q", got.Attempt, got.PublishedAt, got.Topic)
			}
			var native types.Message
			if !got.As(&native) || aws.ToString(native.MessageId) != "sqs-id" {
				t.Error("As(*types.Message) failed")
			}
		})
	}
}

func TestEncodeSize(t *testing.T) {
	m := &broker.Message{ID: "0123456789", Key: "key", Body: []byte("body"), Headers: map[string]string{"h": "v"}}
	o, err := encode(0, m, false, DefaultMessageLimit)
	if err != nil {
		t.Fatal(err)
	}
	// What SQS counts: body, and each attribute's name, data type and value.
	want := len("body") + len(AttrID) + len("String") + 10 + len(AttrKey) + len("String") + 3 + len("h") + len("String") + 1
	if o.size != want {
		t.Errorf("size = %d, want %d", o.size, want)
	}
	// A text body at the publisher's limit always fits.
	limit := DefaultMessageLimit - sizeReserve
	full := &broker.Message{ID: strings.Repeat("i", 26), Key: "k", Body: bytes.Repeat([]byte("x"), limit-27-6), Headers: map[string]string{"a": "b", "c": "d", "e": "f"}}
	if full.Size() != limit {
		t.Fatalf("test message is %d bytes, want %d", full.Size(), limit)
	}
	if _, err := encode(0, full, true, DefaultMessageLimit); err != nil {
		t.Errorf("a message of MaxMessageSize with a text body: %v", err)
	}
	// A binary body grows by a third when base64-encoded: refused before sending.
	bin := &broker.Message{ID: "b", Body: bytes.Repeat([]byte{0xff}, limit-1)}
	if _, err := encode(0, bin, false, DefaultMessageLimit); !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Errorf("binary body of %d bytes: %v, want ErrMessageTooLarge", len(bin.Body), err)
	}
}

func TestFIFOIDs(t *testing.T) {
	keyed, _ := encode(0, &broker.Message{ID: "id-1", Key: "customer-7", Body: []byte("x")}, true, DefaultMessageLimit)
	if aws.ToString(keyed.entry.MessageGroupId) != "customer-7" || aws.ToString(keyed.entry.MessageDeduplicationId) != "id-1" {
		t.Errorf("group %q dedup %q", aws.ToString(keyed.entry.MessageGroupId), aws.ToString(keyed.entry.MessageDeduplicationId))
	}
	unkeyed, _ := encode(0, &broker.Message{ID: "id-2", Body: []byte("x")}, true, DefaultMessageLimit)
	if aws.ToString(unkeyed.entry.MessageGroupId) != "id-2" {
		t.Errorf("an unkeyed message's group = %q, want its ID", aws.ToString(unkeyed.entry.MessageGroupId))
	}
	redriven, _ := encode(0, &broker.Message{ID: "id-1", Key: "customer-7", Body: []byte("x"),
		Headers: map[string]string{dlq.HeaderRedriveCount: "1"}}, true, DefaultMessageLimit)
	if aws.ToString(redriven.entry.MessageDeduplicationId) == "id-1" {
		t.Error("a redriven copy has the deduplication ID of the original: SQS would drop it")
	}
	std, _ := encode(0, &broker.Message{ID: "id-3", Key: "k", Body: []byte("x")}, false, DefaultMessageLimit)
	if std.entry.MessageGroupId != nil || std.entry.MessageDeduplicationId != nil {
		t.Error("FIFO attributes on a standard queue message")
	}
}

func TestDecodeForeignMessage(t *testing.T) {
	m, err := decode("q", types.Message{
		MessageId: aws.String("abc"),
		Body:      aws.String(`{"order":7}`),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"tenant": {DataType: aws.String("String"), StringValue: aws.String("acme")},
			"n":      {DataType: aws.String("Number"), StringValue: aws.String("42")},
			"blob":   {DataType: aws.String("Binary"), BinaryValue: []byte{1}},
		},
		Attributes: map[string]string{"MessageGroupId": "g1", "ApproximateReceiveCount": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "abc" || m.Key != "g1" || string(m.Body) != `{"order":7}` || m.Attempt != 1 {
		t.Errorf("decoded %+v", m)
	}
	if !maps.Equal(m.Headers, map[string]string{"tenant": "acme", "n": "42"}) {
		t.Errorf("headers = %v", m.Headers)
	}
}

func TestDecodeMalformed(t *testing.T) {
	m, err := decode("q", types.Message{
		Body: aws.String("not base64!"),
		MessageAttributes: map[string]types.MessageAttributeValue{
			AttrID:           {DataType: aws.String("String"), StringValue: aws.String("id")},
			AttrBodyEncoding: {DataType: aws.String("String"), StringValue: aws.String(BodyBase64)},
			AttrHeaders:      {DataType: aws.String("Binary"), BinaryValue: []byte{1, 9}},
		},
	})
	if err == nil || string(m.Body) != "not base64!" || m.ID != "id" {
		t.Errorf("decode of a malformed message = %q, %v; want the raw body and an error", m.Body, err)
	}
}

func TestSQSText(t *testing.T) {
	for s, want := range map[string]bool{
		"plain": true, "tab\tnl\ncr\r": true, "žluťoučký kůň": true, "emoji 🙂": true,
		"nul\x00": false, "bell\x07": false, "\xff": false, "\xef\xbf\xbe": false, "\xed\xa0\x80": false,
	} {
		if got := sqsText([]byte(s)); got != want {
			t.Errorf("sqsText(%q) = %v, want %v", s, got, want)
		}
	}
}
