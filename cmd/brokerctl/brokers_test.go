package main

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/brokertest"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// target is a broker the command-line tests run against.
type target struct {
	brokertest.Target
	// idle is the dlq commands' --idle: it also covers joining the group and,
	// on SQS, a message taken by a long poll that the previous run abandoned
	// coming back (visibility_timeout).
	idle string
	// query holds the URL parameters the tests set on this broker.
	query url.Values
}

var targets = []target{
	{Target: brokertest.Mem, idle: "2s"},
	{Target: brokertest.RabbitMQ, idle: "2s"},
	{Target: brokertest.Kafka, idle: "5s"},
	{Target: brokertest.SQS, idle: "4s", query: url.Values{"visibility_timeout": {"2s"}, "wait_time": {"1s"}}},
}

// open returns the broker's URL, as an operator would write it, and removes
// what the test creates for topic when the test ends. It skips the test when
// the broker is not available (fails with CI=true).
func (tg target) open(t *testing.T, topic string) string {
	return tg.URL(t, topic, &brokertest.Options{Query: tg.query})
}

func TestEndToEnd(t *testing.T) {
	for _, tg := range targets {
		t.Run(tg.Name, func(t *testing.T) {
			topic := conformance.RandomName("ctl")
			testEndToEnd(t, tg.open(t, topic), topic, tg.idle)
		})
	}
}

// privateGroup is how tail names the group of its own on stderr.
var privateGroup = regexp.MustCompile(`group (brokerctl-tail-[0-9a-z]+)`)

// tail without --group sees what is published from now on, takes nothing
// from the default group, and on RabbitMQ leaves no queue behind. SQS, which
// has no fan-out, refuses it.
func TestTailOwnGroup(t *testing.T) {
	for _, tg := range targets {
		t.Run(tg.Name, func(t *testing.T) {
			topic := conformance.RandomName("ctl")
			u := tg.open(t, topic)
			if code, _, errOut := ctl(t, u, "", "publish", topic, "old"); code != 0 {
				t.Fatalf("publish: exit %d: %s", code, errOut)
			}
			if !tg.Capabilities.FanOut {
				code, _, errOut := ctl(t, u, "", "tail", "--count", "1", topic)
				if code != exitUsage || !strings.Contains(errOut, "default group") {
					t.Fatalf("tail in a group of its own: exit %d, %q; want %d and a hint to use the default group", code, errOut, exitUsage)
				}
				return
			}
			var (
				code        int
				out, errOut string
				tailDone    = make(chan struct{})
			)
			go func() {
				defer close(tailDone)
				code, out, errOut = ctl(t, u, "", "tail", "--count", "1", "--timeout", "30s", topic)
			}()
			// Tail's group exists once it has joined, which takes a moment:
			// publish until tail has printed a message.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for publishing := true; publishing; {
				select {
				case <-tailDone:
					publishing = false
				case <-tick.C:
					if c, _, e := ctl(t, u, "", "publish", topic, "new"); c != 0 {
						t.Errorf("publish: exit %d: %s", c, e)
						<-tailDone
						return
					}
				}
			}
			if code != 0 || !strings.Contains(out, "\nnew\n") || strings.Contains(out, "old") {
				t.Fatalf("tail: exit %d, want only a message published after it started:\n%s\n%s", code, out, errOut)
			}
			m := privateGroup.FindStringSubmatch(errOut)
			if m == nil {
				t.Fatalf("tail did not name its group on stderr: %q", errOut)
			}
			if code, out, _ := ctl(t, u, "", "stats", topic); code != 0 || rowHas(out, topic, "0") {
				t.Errorf("stats of the default group after tail: exit %d, want the messages still there:\n%s", code, out)
			}
			if tg.Name == brokertest.RabbitMQ.Name {
				if exists := rabbitQueueExists(t, u, topic+"."+m[1]); exists {
					t.Errorf("tail's queue %s.%s is still there after it exited", topic, m[1])
				}
			}
		})
	}
}

// rabbitTimeout bounds connecting to RabbitMQ to look for a queue.
const rabbitTimeout = 10 * time.Second

// rabbitQueueExists reports whether the queue exists, by declaring it
// passively.
func rabbitQueueExists(t *testing.T, uri, queue string) bool {
	t.Helper()
	conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(rabbitTimeout)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return false
	}
	if err != nil {
		t.Fatalf("declaring %s passively: %v", queue, err)
	}
	// Still there: remove it, so the failing test does not leak it.
	_, _ = ch.QueueDelete(queue, false, false, false)
	return true
}

// stats --partitions adds a table of each partition's committed offset, end
// and lag where topics are partitioned logs (Kafka: the lags sum to the lag
// column, the three keyed messages on one partition), and nothing elsewhere.
func TestStatsPartitions(t *testing.T) {
	for _, tg := range targets {
		t.Run(tg.Name, func(t *testing.T) {
			topic := conformance.RandomName("ctl")
			u := tg.open(t, topic)
			if code, out, errOut := ctl(t, u, "a\nb\nc\n", "publish", "--key", "k", topic); code != 0 {
				t.Fatalf("publish: exit %d: %s %s", code, out, errOut)
			}
			waitFor(t, "stats to show depth 3", func() bool {
				code, out, _ := ctl(t, u, "", "stats", topic)
				return code == 0 && rowHas(out, topic, "3")
			})
			code, out, errOut := ctl(t, u, "", "stats", "--partitions", topic)
			if code != 0 {
				t.Fatalf("stats --partitions: exit %d: %s", code, errOut)
			}
			tables := strings.Split(strings.TrimSpace(out), "\n\n")
			if tg.Name != brokertest.Kafka.Name {
				if len(tables) != 1 {
					t.Fatalf("a partition table on %s:\n%s", tg.Name, out)
				}
				return
			}
			if len(tables) != 2 {
				t.Fatalf("want the stats table and the partition table:\n%s", out)
			}
			rows := strings.Split(tables[1], "\n")
			if got := strings.Join(strings.Fields(rows[0]), " "); got != "topic partition committed end lag" {
				t.Fatalf("partition table header %q", got)
			}
			var lags []string
			for _, row := range rows[1:] {
				f := strings.Fields(row)
				if len(f) != 5 || f[0] != topic {
					t.Fatalf("partition row %q", row)
				}
				if f[4] != "0" {
					lags = append(lags, f[4])
				}
			}
			if len(rows) < 2 || len(lags) != 1 || lags[0] != "3" {
				t.Fatalf("want one partition with lag 3, the others 0:\n%s", tables[1])
			}
		})
	}
}
