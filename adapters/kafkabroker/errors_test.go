package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

func TestErrorTable(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		err  error
		want error // nil: no sentinel
	}{
		{kafka.UnknownTopicOrPartition, broker.ErrNotFound},
		{kafka.InvalidTopic, broker.ErrInvalidArgument},
		{kafka.MessageSizeTooLarge, broker.ErrMessageTooLarge},
		{kafka.RecordListTooLarge, broker.ErrMessageTooLarge},
		{kafka.NotLeaderForPartition, broker.ErrUnavailable},
		{kafka.LeaderNotAvailable, broker.ErrUnavailable},
		{kafka.RequestTimedOut, broker.ErrUnavailable},
		{kafka.NotEnoughReplicas, broker.ErrUnavailable},
		{kafka.GroupCoordinatorNotAvailable, broker.ErrUnavailable},
		{kafka.RebalanceInProgress, broker.ErrUnavailable},
		{kafka.SASLAuthenticationFailed, broker.ErrPermissionDenied},
		{kafka.TopicAuthorizationFailed, broker.ErrPermissionDenied},
		{kafka.GroupAuthorizationFailed, broker.ErrPermissionDenied},
		{kafka.UnsupportedSASLMechanism, broker.ErrUnsupported},
		{kafka.MessageTooLargeError{}, broker.ErrMessageTooLarge},
		{io.ErrClosedPipe, broker.ErrClosed},
		{io.ErrUnexpectedEOF, broker.ErrUnavailable},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), broker.ErrUnavailable},
		{&net.OpError{Op: "dial", Err: errors.New("no route")}, broker.ErrUnavailable},
		{kafka.InvalidProducerEpoch, nil},
		{errors.New("something else"), nil},
	} {
		err := wrap(ctx, "publish \"t\"", c.err)
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%v: wrapped = %v, want %v", c.err, err, c.want)
		}
		if c.want == nil && sentinel(c.err) != nil {
			t.Errorf("%v: sentinel %v, want none", c.err, sentinel(c.err))
		}
		if !errors.Is(err, c.err) && !errors.As(err, new(kafka.MessageTooLargeError)) {
			t.Errorf("%v: the native error is not reachable from %v", c.err, err)
		}
	}
	var ke kafka.Error
	if err := wrap(ctx, "op", kafka.TopicAuthorizationFailed); !errors.As(err, &ke) || ke != kafka.TopicAuthorizationFailed {
		t.Errorf("errors.As to kafka.Error failed on %v", err)
	}
}

func TestWrapContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := wrap(ctx, "op", fmt.Errorf("x: %w", context.Canceled)); err != context.Canceled {
		t.Errorf("with the caller's context ended: %v, want context.Canceled unwrapped", err)
	}
	// kafka-go's own timeout while the caller still waits: the broker is slow.
	err := wrap(context.Background(), "op", context.DeadlineExceeded)
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("internal timeout: %v, want ErrUnavailable", err)
	}
	if wrap(context.Background(), "op", nil) != nil {
		t.Error("wrap(nil) != nil")
	}
}

func TestRecordSizeBound(t *testing.T) {
	m := &broker.Message{ID: "0123456789", Key: "k", Body: make([]byte, 100), Headers: map[string]string{"a": "b", "cc": "dd"}}
	km := new(records).fill("t", []*broker.Message{m}, time.Time{})[0]
	// kafka-go's own estimate of the record is below our bound.
	if n := recordSize(m); n < len(km.Key)+len(km.Value)+len(HeaderID)+len(m.ID)+6 {
		t.Fatalf("recordSize %d is not an upper bound", n)
	}
	if km.Headers[0].Key != HeaderID || string(km.Headers[0].Value) != m.ID || len(km.Headers) != 3 {
		t.Fatalf("headers = %v", km.Headers)
	}
	back := &broker.Message{}
	fromKafka(back, &kafka.Message{Topic: "t", Partition: 2, Offset: 9, Key: km.Key, Value: km.Value, Headers: km.Headers})
	if back.ID != m.ID || back.Key != "k" || len(back.Headers) != 2 || back.Headers["cc"] != "dd" || back.Attempt != 1 {
		t.Fatalf("round trip = %+v", back)
	}
	foreign := &broker.Message{}
	fromKafka(foreign, &kafka.Message{Topic: "t", Partition: 2, Offset: 9})
	if foreign.ID != "t/2/9" || foreign.Key != "" || foreign.Headers != nil {
		t.Fatalf("foreign record = %+v", foreign)
	}
	unkeyed := new(records).fill("t", []*broker.Message{{ID: "x"}}, time.Time{})[0]
	if unkeyed.Key != nil {
		t.Fatalf("an empty Key must be a null record key, got %q", unkeyed.Key)
	}
}

// The records of one batch share their byte and header allocations; each must
// still carry exactly its own ID, key and headers, and appending to one record's
// slices must not write into its neighbour's.
func TestRecordsKeepMessagesApart(t *testing.T) {
	msgs := []*broker.Message{
		{ID: "id-0", Key: "k0"},
		{ID: "id-1"},
		{ID: "id-2", Key: "key-2", Headers: map[string]string{"h": "v", HeaderID: "ignored"}},
		{ID: "id-3", Key: "k3"},
	}
	km := new(records).fill("t", msgs, time.Time{})
	km[0].Key = append(km[0].Key, 'X')
	km[0].Headers = append(km[0].Headers, kafka.Header{Key: "extra"})
	for i, m := range msgs {
		back := &broker.Message{}
		fromKafka(back, &km[i])
		if back.ID != m.ID || (i > 0 && back.Key != m.Key) || km[i].Topic != "t" {
			t.Errorf("record %d = %+v, want id %q key %q", i, back, m.ID, m.Key)
		}
		if i > 0 && len(m.Headers) == 0 && len(km[i].Headers) != 1 {
			t.Errorf("record %d headers = %v, want only the ID", i, km[i].Headers)
		}
	}
	if got := km[2].Headers; len(got) != 2 || got[0].Key != HeaderID || string(got[0].Value) != "id-2" || got[1].Key != "h" {
		t.Errorf("record 2 headers = %v, want the ID then h", got)
	}
	if km[1].Key != nil || len(km[1].Headers) != 1 {
		t.Errorf("record 1 = key %q headers %v, want no key and only the ID", km[1].Key, km[1].Headers)
	}
}

// A sender reuses records: a second fill must carry only its own messages,
// and reset must drop the references to the first ones' bodies.
func TestRecordsReuse(t *testing.T) {
	var rs records
	body := []byte("first body")
	first := rs.fill("a", []*broker.Message{{ID: "id-a0", Key: "ka", Body: body}, {ID: "id-a1", Headers: map[string]string{"h": "v"}}}, time.Time{})
	if string(first[0].Key) != "ka" || string(first[0].Headers[0].Value) != "id-a0" {
		t.Fatalf("first fill = %+v", first[0])
	}
	rs.reset()
	for i, km := range rs.km {
		if km.Value != nil || km.Headers != nil {
			t.Fatalf("record %d still refers to a sent message after reset", i)
		}
	}
	second := rs.fill("b", []*broker.Message{{ID: "id-b0"}}, time.Time{})
	if len(second) != 1 || second[0].Topic != "b" || second[0].Key != nil || len(second[0].Headers) != 1 ||
		string(second[0].Headers[0].Value) != "id-b0" || second[0].Value != nil {
		t.Fatalf("second fill = %+v", second)
	}
}

func TestReusableRecords(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, true},
		{kafka.WriteErrors{kafka.RequestTimedOut}, true},
		{io.ErrClosedPipe, true},
		{fmt.Errorf("w: %w", context.Canceled), false},
		{context.DeadlineExceeded, false},
	} {
		if got := reusable(c.err); got != c.want {
			t.Errorf("reusable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A consumer stops on a refusal and pauses on anything else: joinError and
// fetchError decide which, and keep the kafka-go error reachable.
func TestJoinAndFetchErrors(t *testing.T) {
	s := &subscription{topic: "t"}
	for _, c := range []struct {
		err         error
		join, fetch error // the sentinel each must wrap
	}{
		{kafka.GroupAuthorizationFailed, broker.ErrPermissionDenied, broker.ErrPermissionDenied},
		{kafka.TopicAuthorizationFailed, broker.ErrPermissionDenied, broker.ErrPermissionDenied},
		{kafka.InvalidSessionTimeout, broker.ErrInvalidArgument, broker.ErrUnavailable},
		{kafka.UnsupportedVersion, broker.ErrUnsupported, broker.ErrUnsupported},
		{kafka.UnknownTopicOrPartition, broker.ErrUnavailable, broker.ErrUnavailable},
		{kafka.NotLeaderForPartition, broker.ErrUnavailable, broker.ErrUnavailable},
		{kafka.GroupCoordinatorNotAvailable, broker.ErrUnavailable, broker.ErrUnavailable},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), broker.ErrUnavailable, broker.ErrUnavailable},
		{io.ErrUnexpectedEOF, broker.ErrUnavailable, broker.ErrUnavailable},
	} {
		for _, got := range []struct {
			name string
			err  error
			want error
		}{{"join", s.joinError(c.err), c.join}, {"fetch", fetchError("t", 1, c.err), c.fetch}} {
			if !errors.Is(got.err, got.want) || !errors.Is(got.err, c.err) {
				t.Errorf("%s error of %v = %v, want it to wrap %v and the cause", got.name, c.err, got.err, got.want)
			}
			if got.want != broker.ErrUnavailable && errors.Is(got.err, broker.ErrUnavailable) {
				t.Errorf("%s error of %v = %v: a refusal must not read as unavailable", got.name, c.err, got.err)
			}
		}
	}
}

// misrouted tells a stale route (which relearning the layout mends) from
// other failures.
func TestMisrouted(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("fetch: %w", kafka.NotLeaderForPartition), true},
		{kafka.LeaderNotAvailable, true},
		{kafka.UnknownTopicOrPartition, true},
		{fetchapi.NewError(protocol.NewErrNoPartition("t", 2)), true},
		{fetchapi.NewError(protocol.NewErrNoLeader("t", 0)), true},
		{kafka.OffsetOutOfRange, false},
		{kafka.TopicAuthorizationFailed, false},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), false},
		{io.ErrUnexpectedEOF, false},
	} {
		if got := misrouted(c.err); got != c.want {
			t.Errorf("misrouted(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
