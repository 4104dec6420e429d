package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

func TestNewIDSortableAndUnique(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := range 10000 {
		id := broker.NewID()
		if len(id) != 26 {
			t.Fatalf("NewID() = %q, want 26 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q after %d calls", id, i)
		}
		seen[id] = true
		if i%1000 == 0 {
			time.Sleep(time.Millisecond) // IDs of different milliseconds must sort by time
			next := broker.NewID()
			if prev != "" && next <= prev {
				t.Fatalf("NewID() %q made later sorts before %q", next, prev)
			}
			prev = next
		}
	}
}

// AssignIDs fills only the missing IDs, skips nil messages, and gives IDs
// that are unique, NewID's length and alphabet, and sorted in batch order,
// also across the strings it cuts them from and after an earlier NewID.
func TestAssignIDs(t *testing.T) {
	before := broker.NewID()
	msgs := make([]*broker.Message, 200)
	for i := range msgs {
		msgs[i] = &broker.Message{}
	}
	msgs[3].ID = "kept"
	msgs[70] = nil
	broker.AssignIDs(msgs)
	if msgs[3].ID != "kept" {
		t.Fatalf("an existing ID was replaced by %q", msgs[3].ID)
	}
	prev := before
	seen := map[string]bool{}
	for i, m := range msgs {
		if m == nil || i == 3 {
			continue
		}
		if len(m.ID) != 26 || strings.Trim(m.ID, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") != "" {
			t.Fatalf("message %d: ID %q is not 26 base32 digits", i, m.ID)
		}
		if seen[m.ID] || m.ID <= prev {
			t.Fatalf("message %d: ID %q repeats or sorts before %q", i, m.ID, prev)
		}
		seen[m.ID], prev = true, m.ID
	}
	broker.AssignIDs(nil)
	broker.AssignIDs([]*broker.Message{nil})
}

type nopOpener struct{}

func (nopOpener) OpenPublisher(context.Context, *url.URL) (broker.Publisher, error) { return nil, nil }
func (nopOpener) OpenConsumer(context.Context, *url.URL, broker.ConsumerOptions) (broker.Consumer, error) {
	return nil, nil
}

var registerOnce sync.Once

func TestRegisterPanicsOnMisuse(t *testing.T) {
	registerOnce.Do(func() { broker.Register("test-nop", nopOpener{}) })
	for name, f := range map[string]func(){
		"empty scheme": func() { broker.Register("", nopOpener{}) },
		"upper case":   func() { broker.Register("MEMX", nopOpener{}) },
		"nil opener":   func() { broker.Register("test-nil", nil) },
		"duplicate":    func() { broker.Register("test-nop", nopOpener{}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Register did not panic")
				}
			}()
			f()
		})
	}
	if !slices.Contains(broker.Schemes(), "test-nop") || !slices.Contains(broker.Schemes(), "mem") {
		t.Errorf("Schemes() = %v, want test-nop and mem", broker.Schemes())
	}
}

func TestOpenRejectsBadURLsWithoutLeakingSecrets(t *testing.T) {
	for _, raw := range []string{
		"amqp-unknown://user:hunter2@host/",
		"://user:hunter2@host",
		"no-scheme-hunter2",
		"mem://x?password=hunter2&bogus=1",
		"mem://a:hunter2@x/",
		"mem://x:99/",
	} {
		_, err := broker.OpenPublisher(context.Background(), raw)
		if !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("OpenPublisher(%q) = %v, want ErrInvalidArgument", raw, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("OpenPublisher(%q) error leaks the secret: %v", raw, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:guest@localhost:5672/":       "amqp://guest:xxxxx@localhost:5672/",
		"kafka://h:9092?sasl_password=p&group=g":   "kafka://h:9092?group=g&sasl_password=xxxxx",
		"sqs://?region=eu-west-1":                  "sqs://?region=eu-west-1",
		"amqp://u:p%zz@host/":                      "amqp://xxxxx@host/",
		"postgres://u:pw@h/db?sslmode=disable&x=y": "postgres://u:xxxxx@h/db?sslmode=disable&x=y",
		"sqs://q?endpoint=http://ak:sk@h:9324":     "sqs://q?endpoint=http%3A%2F%2Fak%3Axxxxx%40h%3A9324",
		"sqs://q?endpoint=http://h:9324":           "sqs://q?endpoint=http://h:9324",
	} {
		if got := broker.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("bad payload")
	p := broker.Permanent(fmt.Errorf("decode: %w", base))
	if !broker.IsPermanent(p) || !broker.IsPermanent(fmt.Errorf("wrapped: %w", p)) {
		t.Error("IsPermanent is false for a Permanent error")
	}
	if !errors.Is(p, base) {
		t.Error("Permanent hides the cause from errors.Is")
	}
	if broker.IsPermanent(base) || broker.Permanent(nil) != nil {
		t.Error("IsPermanent(plain) or Permanent(nil) wrong")
	}
	if broker.IsRetryable(p) || !broker.IsRetryable(fmt.Errorf("x: %w", broker.ErrUnavailable)) ||
		broker.IsRetryable(fmt.Errorf("x: %w", broker.ErrInvalidArgument)) || broker.IsRetryable(nil) {
		t.Error("IsRetryable misclassifies")
	}
}

func TestPublishErrorUnwrapsCauses(t *testing.T) {
	err := error(&broker.PublishError{Topic: "t", Failed: []broker.FailedMessage{
		{Index: 2, ID: "a", Err: fmt.Errorf("too big: %w", broker.ErrMessageTooLarge)},
		{Index: 5, ID: "b", Err: broker.ErrUnavailable},
	}})
	if !errors.Is(err, broker.ErrMessageTooLarge) || !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("errors.Is does not see the causes of %v", err)
	}
	var pe *broker.PublishError
	if !errors.As(fmt.Errorf("w: %w", err), &pe) || pe.Failed[1].Index != 5 {
		t.Error("errors.As to *PublishError failed")
	}
	if !strings.Contains(err.Error(), "#2 (id a)") {
		t.Errorf("message does not name the failed message: %v", err)
	}
}

func TestExponentialBackoffBounds(t *testing.T) {
	b := broker.ExponentialBackoff(10*time.Millisecond, 80*time.Millisecond)
	for attempt, ceil := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 80, 5: 80, 50: 80} {
		ceil *= time.Millisecond
		for range 200 {
			d := b(attempt)
			if d < ceil/2 || d > ceil {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, ceil/2, ceil)
			}
		}
	}
	if d := broker.ExponentialBackoff(0, time.Second)(3); d != 0 {
		t.Errorf("zero min gives %v, want 0", d)
	}
}

func TestMessageAs(t *testing.T) {
	m := &broker.Message{Native: native{7}}
	var n native
	if !m.As(&n) || n.tag != 7 {
		t.Error("As did not set the native value")
	}
	var s string
	if m.As(&s) || m.As(nil) || m.As(n) || (&broker.Message{}).As(&n) {
		t.Error("As reported true for a mismatched target")
	}
	// An adapter that keeps a pointer serves both value and pointer targets.
	byRef := &broker.Message{Native: &native{9}}
	var v native
	var p *native
	if !byRef.As(&v) || v.tag != 9 || !byRef.As(&p) || p.tag != 9 {
		t.Errorf("As with a pointer Native: value %v, pointer %v", v, p)
	}
	if byRef.As(&s) {
		t.Error("As reported true for a mismatched target of a pointer Native")
	}
	// A Native with an As method converts itself.
	conv := &broker.Message{Native: converter{tag: 3}}
	if !conv.As(&v) || v.tag != 3 || conv.As(&s) {
		t.Errorf("As with a converting Native: value %v, string %q", v, s)
	}
}

// converter is a Native value that builds a native{tag} on demand.
type converter struct{ tag int }

func (c converter) As(target any) bool {
	p, ok := target.(*native)
	if ok {
		*p = native{c.tag}
	}
	return ok
}

type native struct{ tag int }

func TestConsumerOptionsValidate(t *testing.T) {
	for _, o := range []broker.ConsumerOptions{{Concurrency: -1}, {MaxAttempts: -2}, {Group: "a b"}, {DrainTimeout: -time.Second}} {
		if err := o.Validate(); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidArgument", o, err)
		}
	}
	d := broker.ConsumerOptions{}.WithDefaults()
	if d.Group != broker.DefaultGroup || d.Concurrency != 1 || d.MaxAttempts != 5 || d.Backoff == nil || d.Logger == nil {
		t.Errorf("WithDefaults() = %+v", d)
	}
}

func TestDeadLetterTopicNames(t *testing.T) {
	if got := broker.DeadLetterTopic("orders"); got != "orders.dlq" || !broker.IsDeadLetterTopic(got) || broker.IsDeadLetterTopic("orders") {
		t.Errorf("DeadLetterTopic(orders) = %q; IsDeadLetterTopic wrong", got)
	}
	if got := (broker.ConsumerOptions{}).DeadLetterTopicFor("orders"); got != "orders.dlq" {
		t.Errorf("DeadLetterTopicFor = %q, want the default name", got)
	}
	if got := (broker.ConsumerOptions{DeadLetterTopic: "parked"}).DeadLetterTopicFor("orders"); got != "parked" {
		t.Errorf("DeadLetterTopicFor with DeadLetterTopic = %q, want parked", got)
	}
}
