package kafkabroker

import (
	"context"
	"errors"
	"testing"

	"github.com/segmentio/kafka-go"
)

// When the Send's context has ended, what produce could not write is not
// handed to the Writer: those messages fail with the cause, the others
// succeeded, and a Send none of which went fails with the cause alone.
func TestFallbackAfterContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := &sender{} // no Writers: fallback must not reach them
	km := make([]kafka.Message, 4)
	cause := errors.New("cut short")

	err := s.fallback(ctx, "t", km, []int{1, 3}, cause)
	var we kafka.WriteErrors
	if !errors.As(err, &we) || len(we) != 4 || we[0] != nil || we[1] != cause || we[2] != nil || we[3] != cause {
		t.Fatalf("fallback of messages 1 and 3 of 4 = %#v, want WriteErrors{nil, cause, nil, cause}", err)
	}
	if err := s.fallback(ctx, "t", km, []int{0, 1, 2, 3}, cause); err != cause {
		t.Fatalf("fallback of all 4 = %v, want the cause itself", err)
	}
}

// recordReader yields the chosen records in order, with their key, value,
// time and headers, and then io.EOF.
func TestRecordReader(t *testing.T) {
	km := []kafka.Message{
		{Key: []byte("k0"), Value: []byte("v0")},
		{Value: []byte("v1"), Headers: []kafka.Header{{Key: "h", Value: []byte("x")}}},
		{Key: []byte("k2")},
	}
	r := &recordReader{km: km, idx: []int{2, 1}}
	rec, err := r.ReadRecord()
	if err != nil || rec.Key == nil || rec.Value != nil {
		t.Fatalf("first record: %+v, %v; want key k2 and a null value", rec, err)
	}
	if b, _ := kafka.ReadAll(rec.Key); string(b) != "k2" {
		t.Fatalf("first key %q, want k2", b)
	}
	rec, err = r.ReadRecord()
	if err != nil || rec.Key != nil || len(rec.Headers) != 1 {
		t.Fatalf("second record: %+v, %v; want a null key and one header", rec, err)
	}
	if b, _ := kafka.ReadAll(rec.Value); string(b) != "v1" {
		t.Fatalf("second value %q, want v1", b)
	}
	if rec, err := r.ReadRecord(); rec != nil || err == nil {
		t.Fatalf("third read: %+v, %v; want io.EOF", rec, err)
	}
}
