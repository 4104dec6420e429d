package sqsbroker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// ackLinger is how long an acknowledgement waits for nine more to share a
// DeleteMessageBatch call. It is short because on a FIFO queue a message
// group stays blocked until its in-flight messages are deleted.
const ackLinger = 10 * time.Millisecond

// acker deletes acknowledged messages in batches of up to 10: a full batch is
// sent at once, a partial one after ackLinger.
type acker struct {
	s   *subscription
	sem chan struct{} // bounds concurrent DeleteMessageBatch calls

	mu       sync.Mutex
	pending  []string // receipt handles
	timer    *time.Timer
	inflight sync.WaitGroup
	closing  bool
	errs     []error // failures of the deletes close waited for
}

func (a *acker) add(receipt string) {
	a.mu.Lock()
	a.pending = append(a.pending, receipt)
	if len(a.pending) >= maxPublishBatch {
		batch := a.pending
		a.pending = nil
		a.inflight.Add(1)
		a.mu.Unlock()
		go a.delete(batch)
		return
	}
	if a.timer == nil {
		a.timer = time.AfterFunc(ackLinger, a.flush)
	}
	a.mu.Unlock()
}

// flush sends what is pending; the timer calls it.
func (a *acker) flush() {
	a.mu.Lock()
	a.timer = nil
	batch := a.pending
	a.pending = nil
	if len(batch) > 0 {
		a.inflight.Add(1)
	}
	a.mu.Unlock()
	if len(batch) > 0 {
		a.delete(batch)
	}
}

// close sends what is pending and waits for every delete to finish. It
// returns the failures of deletes run during close.
func (a *acker) close() error {
	a.mu.Lock()
	a.closing = true
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.mu.Unlock()
	a.flush()
	a.inflight.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	err := errors.Join(a.errs...)
	a.errs = nil
	return err
}

// delete runs one DeleteMessageBatch. A message whose delete fails comes back
// after its visibility timeout: a duplicate delivery, never a loss.
func (a *acker) delete(receipts []string) {
	defer a.inflight.Done()
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	s := a.s
	in := &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(s.q.url)}
	for i, r := range receipts {
		in.Entries = append(in.Entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(r)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	out, err := s.b.api.DeleteMessageBatch(ctx, in)
	if err != nil {
		a.report(len(receipts), wrap("delete acknowledged messages from", s.q.topic, err))
		return
	}
	for _, f := range out.Failed {
		a.report(1, entryError("delete an acknowledged message from", s.q.topic, aws.ToString(f.Code), aws.ToString(f.Message), f.SenderFault))
	}
}

// report logs a failed delete, or keeps it for close to return.
func (a *acker) report(messages int, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closing {
		a.s.log.Warn("sqs: deleting acknowledged messages failed; they will be redelivered", "messages", messages, "error", err)
	} else if len(a.errs) < 10 {
		a.errs = append(a.errs, err)
	}
}
