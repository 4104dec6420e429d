package sqsbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
)

// fakeSQS records SendMessageBatch calls and fails the entries its fail
// function picks; the other methods are not used by these tests.
type fakeSQS struct {
	api
	mu      sync.Mutex
	batches [][]types.SendMessageBatchRequestEntry
	fail    func(e types.SendMessageBatchRequestEntry) (code string, whole bool)
}

func (f *fakeSQS) GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, _ ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error) {
	return &sqs.GetQueueUrlOutput{QueueUrl: aws.String("http://fake/000/" + *in.QueueName)}, nil
}

func (f *fakeSQS) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	f.mu.Lock()
	f.batches = append(f.batches, in.Entries)
	f.mu.Unlock()
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		if f.fail != nil {
			if code, whole := f.fail(e); whole {
				return nil, &types.RequestThrottled{Message: aws.String("slow down")}
			} else if code != "" {
				out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String(code), SenderFault: true})
				continue
			}
		}
		out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func body(e types.SendMessageBatchRequestEntry) string { return aws.ToString(e.MessageBody) }

func fakeBroker(t *testing.T, f *fakeSQS, opts *Options) *Broker {
	b, err := newBroker(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func messages(n int, key func(i int) string) []*broker.Message {
	ms := make([]*broker.Message, n)
	for i := range ms {
		ms[i] = &broker.Message{ID: fmt.Sprint("id", i), Key: key(i), Body: []byte(strconv.Itoa(i))}
	}
	return ms
}

func TestSendBatches(t *testing.T) {
	f := &fakeSQS{}
	b := fakeBroker(t, f, nil)
	if err := b.NewPublisher().Publish(context.Background(), "q", messages(95, func(int) string { return "" })...); err != nil {
		t.Fatal(err)
	}
	if len(f.batches) != 10 {
		t.Errorf("%d batches for 95 messages, want 10", len(f.batches))
	}
	seen := map[string]bool{}
	for _, batch := range f.batches {
		if len(batch) > maxPublishBatch {
			t.Errorf("batch of %d entries", len(batch))
		}
		for _, e := range batch {
			seen[body(e)] = true
		}
	}
	if len(seen) != 95 {
		t.Errorf("%d distinct messages sent, want 95", len(seen))
	}
}

func TestSendBatchesWithinByteLimit(t *testing.T) {
	f := &fakeSQS{}
	b := fakeBroker(t, f, nil)
	big := make([]*broker.Message, 5)
	for i := range big {
		big[i] = &broker.Message{ID: fmt.Sprint(i), Body: make([]byte, 100<<10)}
		for j := range big[i].Body {
			big[i].Body[j] = 'x'
		}
	}
	if err := b.NewPublisher().Publish(context.Background(), "q", big...); err != nil {
		t.Fatal(err)
	}
	for _, batch := range f.batches {
		size := 0
		for _, e := range batch {
			size += len(body(e))
		}
		if size > DefaultMessageLimit {
			t.Errorf("batch of %d bytes, over the limit", size)
		}
	}
	if len(f.batches) != 3 {
		t.Errorf("%d batches for 5 x 100 KiB, want 3", len(f.batches))
	}
}

func TestSendPartialFailureNamesMessages(t *testing.T) {
	f := &fakeSQS{fail: func(e types.SendMessageBatchRequestEntry) (string, bool) {
		if body(e) == "3" || body(e) == "17" {
			return "InvalidMessageContents", false
		}
		return "", false
	}}
	b := fakeBroker(t, f, nil)
	msgs := messages(25, func(int) string { return "" })
	err := b.NewPublisher().Publish(context.Background(), "q", msgs...)
	var pe *broker.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish = %v, want a *broker.PublishError", err)
	}
	var idx []int
	for _, fm := range pe.Failed {
		idx = append(idx, fm.Index)
		if fm.ID != msgs[fm.Index].ID {
			t.Errorf("failed #%d has ID %q, want %q", fm.Index, fm.ID, msgs[fm.Index].ID)
		}
	}
	if !slices.Equal(idx, []int{3, 17}) || !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("failed indices %v (%v), want [3 17] with ErrInvalidArgument", idx, err)
	}
}

func TestSendWholeFailureIsOneError(t *testing.T) {
	f := &fakeSQS{fail: func(types.SendMessageBatchRequestEntry) (string, bool) { return "", true }}
	b := fakeBroker(t, f, nil)
	err := b.NewPublisher().Publish(context.Background(), "q", messages(3, func(int) string { return "" })...)
	var pe *broker.PublishError
	if errors.As(err, &pe) || !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish = %v, want a plain ErrUnavailable", err)
	}
	var rt *types.RequestThrottled
	if !errors.As(err, &rt) {
		t.Errorf("errors.As cannot reach *types.RequestThrottled in %v", err)
	}
}

// On a FIFO queue the messages of one group go out in order, and after one
// fails the later ones of its group are not sent in later batches. (Entries
// of the same batch as the failed one are one SQS call and cannot be held back.)
func TestSendFIFOOrderAndStopAfterFailure(t *testing.T) {
	f := &fakeSQS{fail: func(e types.SendMessageBatchRequestEntry) (string, bool) {
		if body(e) == "12" { // a message of group g0
			return "InternalError", false
		}
		return "", false
	}}
	b := fakeBroker(t, f, &Options{PublishConcurrency: 3})
	msgs := messages(60, func(i int) string { return fmt.Sprint("g", i%4) })
	err := b.NewPublisher().Publish(context.Background(), "q.fifo", msgs...)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Publish = %v, want a *broker.PublishError with ErrUnavailable", err)
	}
	sent := map[int]bool{}
	last := map[string]int{}
	failedBatch := -1
	for bi, batch := range f.batches {
		for _, e := range batch {
			g := aws.ToString(e.MessageGroupId)
			n, _ := strconv.Atoi(body(e))
			sent[n] = true
			if prev, ok := last[g]; ok && n < prev {
				t.Errorf("group %s: message %d sent after %d", g, n, prev)
			}
			last[g] = n
			if n == 12 {
				failedBatch = bi
			}
			if failedBatch >= 0 && bi > failedBatch && g == "g0" {
				t.Errorf("message %d of the failed group was sent in a later batch", n)
			}
		}
	}
	failed := map[int]bool{}
	for _, fm := range pe.Failed {
		failed[fm.Index] = true
		if fm.Index%4 != 0 || fm.Index < 12 {
			t.Errorf("message #%d failed; only g0 from #12 on may", fm.Index)
		}
	}
	for i := range msgs {
		if !failed[i] && (!sent[i] || i == 12) {
			t.Errorf("message #%d neither accepted nor reported failed", i)
		}
	}
}

func TestSendRefusesOversizeBeforeSending(t *testing.T) {
	f := &fakeSQS{}
	b := fakeBroker(t, f, nil)
	bin := make([]byte, b.MaxMessageSize()-10)
	for i := range bin {
		bin[i] = 0xff
	}
	err := b.NewPublisher().Publish(context.Background(), "q", &broker.Message{Body: []byte("fits")}, &broker.Message{Body: bin})
	if !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Errorf("Publish of a binary body that grows past the limit = %v, want ErrMessageTooLarge", err)
	}
	if len(f.batches) != 0 {
		t.Errorf("%d batches sent; nothing should be", len(f.batches))
	}
}

func TestNewConsumerRefusesOtherGroups(t *testing.T) {
	b := fakeBroker(t, &fakeSQS{}, nil)
	if _, err := b.NewConsumer(&broker.ConsumerOptions{Group: "billing"}); !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("NewConsumer(Group billing) = %v, want ErrUnsupported", err)
	}
	for _, g := range []string{"", broker.DefaultGroup} {
		c, err := b.NewConsumer(&broker.ConsumerOptions{Group: g})
		if err != nil {
			t.Errorf("NewConsumer(Group %q) = %v", g, err)
			continue
		}
		_ = c.Close()
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{VisibilityTimeout: 500 * 1e6},
		{VisibilityTimeout: 13 * 3600 * 1e9},
		{WaitTime: 21 * 1e9},
		{Pollers: -1},
		{PublishConcurrency: -1},
		{MaxMessageSize: MaxMessageLimit + 1},
		{MaxMessageSize: 100},
		{MaxReceiveCount: -1},
	} {
		if _, err := newBroker(&fakeSQS{}, &o); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("Options %+v: %v, want ErrInvalidArgument", o, err)
		}
	}
	if _, err := New(nil, nil); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("New(nil) = %v", err)
	}
}
