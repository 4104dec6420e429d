package membroker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// flakySender fails the first failures sends, like a dead-letter topic that is
// briefly unavailable.
type flakySender struct {
	sender
	failures atomic.Int64
	calls    atomic.Int64
}

func (f *flakySender) Send(ctx context.Context, topic string, msgs []*broker.Message) error {
	if f.calls.Add(1) <= f.failures.Load() {
		return errors.New("dead-letter topic unavailable")
	}
	return f.sender.Send(ctx, topic, msgs)
}

// A dead-letter publish that fails must leave the message unacknowledged: it
// stays in the broker until a later dead-letter publish succeeds. The engine
// does this identically for every adapter; this proves it on both of its paths
// (handing back to the broker, and retrying in process for ordered keys).
func TestFailedDeadLetterPublishKeepsMessage(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		name := map[bool]string{false: "redelivered", true: "in-process"}[ordered]
		t.Run(name, func(t *testing.T) {
			b, _ := New(nil)
			dead := &flakySender{sender: sender{b}}
			dead.failures.Store(2)
			c, err := driver.NewConsumer("mem", receiver{b}, dead, broker.ConsumerOptions{
				MaxAttempts: 2, OrderByKey: ordered, Backoff: broker.ConstantBackoff(5 * time.Millisecond),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p := b.NewPublisher()
			if err := p.Publish(context.Background(), "jobs", &broker.Message{Key: "k", Body: []byte("poison")}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var handled atomic.Int64
			go func() {
				_ = c.Consume(ctx, "jobs", func(context.Context, *broker.Message) error {
					handled.Add(1)
					return errors.New("always fails")
				})
			}()
			deadline := time.Now().Add(10 * time.Second)
			for {
				st, _ := c.Stats(ctx, "jobs", "")
				// The copy lands in the dead-letter topic just before the
				// original is acknowledged: wait for both.
				if st.DeadLetters == 1 && st.Depth+st.InFlight == 0 {
					break
				}
				if dead.calls.Load() <= 2 && st.Depth+st.InFlight != 1 {
					t.Fatalf("the message left jobs (depth %d, in flight %d) while its dead-letter publish was failing", st.Depth, st.InFlight)
				}
				if time.Now().After(deadline) {
					t.Fatalf("never dead-lettered and acknowledged: %d dead-letter publishes, stats %+v", dead.calls.Load(), st)
				}
				time.Sleep(time.Millisecond)
			}
			if n := dead.calls.Load(); n != 3 {
				t.Errorf("%d dead-letter publishes, want 3 (2 failed, 1 succeeded)", n)
			}
		})
	}
}
