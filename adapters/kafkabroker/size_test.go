package kafkabroker

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/segmentio/kafka-go/protocol"
)

// encodedBatch is the size of m alone in a v2 record batch, as kafka-go
// writes it (without the 4-byte size prefix of a produce request).
func encodedBatch(t *testing.T, m *broker.Message) int {
	t.Helper()
	km := new(records).fill("t", []*broker.Message{m}, time.Now())[0]
	r := protocol.Record{Time: km.Time, Headers: km.Headers}
	if km.Key != nil {
		r.Key = protocol.NewBytes(km.Key)
	}
	if km.Value != nil {
		r.Value = protocol.NewBytes(km.Value)
	}
	rs := &protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(r)}
	var buf bytes.Buffer
	if _, err := rs.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Len() - 4
}

// recordSize bounds the real encoding from above, and not by much.
func TestRecordSizeMatchesTheEncoding(t *testing.T) {
	many := map[string]string{}
	for i := range 300 {
		many[fmt.Sprintf("header-%d", i)] = strings.Repeat("v", i)
	}
	for name, m := range map[string]*broker.Message{
		"empty":     {ID: "0RXENVBGNJ858YYZQMXP38W5ER"},
		"keyed":     {ID: "0RXENVBGNJ858YYZQMXP38W5ER", Key: "customer-7", Body: []byte("hello")},
		"large":     {ID: "id", Body: make([]byte, 1<<20)},
		"headers":   {ID: "id", Key: strings.Repeat("k", 300), Body: make([]byte, 5000), Headers: many},
		"long id":   {ID: strings.Repeat("i", 200), Headers: map[string]string{"a": "b"}},
		"long body": {ID: "id", Body: make([]byte, 200_000)},
	} {
		got, bound := encodedBatch(t, m), batchOverhead+recordSize(m)
		if got > bound || bound-got > 20 {
			t.Errorf("%s: encoded %d bytes, bound %d", name, got, bound)
		}
	}
}

// A message of MaxMessageSize with limitHeaders short headers fits.
func TestMaxMessageSizeLeavesRoomForHeaders(t *testing.T) {
	s := &sender{limit: DefaultMaxMessageSize}
	m := &broker.Message{ID: "0RXENVBGNJ858YYZQMXP38W5ER", Key: "k", Headers: map[string]string{}}
	for i := range limitHeaders {
		m.Headers[fmt.Sprintf("h%02d", i)] = "v"
	}
	m.Body = make([]byte, s.MaxMessageSize()-m.Size())
	if m.Size() != s.MaxMessageSize() {
		t.Fatalf("size %d", m.Size())
	}
	if n := batchOverhead + recordSize(m); n > s.limit {
		t.Fatalf("a message at MaxMessageSize with %d headers encodes to %d > %d", limitHeaders, n, s.limit)
	}
	if n := encodedBatch(t, m); n > s.limit {
		t.Fatalf("encoded %d > %d", n, s.limit)
	}
}
