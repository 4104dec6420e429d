package main

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// cleanupTimeout bounds the removal of what a test left on a broker.
const cleanupTimeout = 10 * time.Second

// target is a broker the command-line tests run against.
type target struct {
	name string
	// open returns the broker's URL, as an operator would write it, and
	// removes what the test creates for topic when the test ends. It skips the
	// test when the broker is not available (fails with CI=true).
	open func(t *testing.T, topic string) string
	// idle is the dlq commands' --idle: it also covers joining the group and,
	// on SQS, a message taken by a long poll that the previous run abandoned
	// coming back (visibility_timeout).
	idle string
	// fanOut: a group of tail's own is possible.
	fanOut bool
}

var targets = []target{
	{name: "mem", idle: "2s", fanOut: true, open: func(t *testing.T, topic string) string {
		return "mem://brokerctl-e2e"
	}},
	{name: "RabbitMQ", idle: "2s", fanOut: true, open: func(t *testing.T, topic string) string {
		uri := testenv.AMQPURL(t)
		deleteRabbitAfter(t, uri, topic)
		return uri
	}},
	{name: "Kafka", idle: "5s", fanOut: true, open: func(t *testing.T, topic string) string {
		brokers := testenv.KafkaBrokers(t)
		deleteKafkaAfter(t, brokers, topic)
		u := url.URL{Scheme: "kafka", Host: strings.Join(brokers, ","), RawQuery: "create_topics=true&partitions=3"}
		return u.String()
	}},
	{name: "SQS", idle: "4s", open: func(t *testing.T, topic string) string {
		endpoint := testenv.SQSEndpoint(t)
		// Credentials come from the AWS default chain; ElasticMQ accepts any.
		t.Setenv("AWS_ACCESS_KEY_ID", "brokerkit")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "brokerkit")
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		deleteSQSAfter(t, endpoint, topic)
		q := url.Values{"region": {"us-east-1"}, "endpoint": {endpoint}, "create_queues": {"true"},
			"visibility_timeout": {"2s"}, "wait_time": {"1s"}}
		return "sqs://?" + q.Encode()
	}},
}

func TestEndToEnd(t *testing.T) {
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
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
		t.Run(tg.name, func(t *testing.T) {
			topic := conformance.RandomName("ctl")
			u := tg.open(t, topic)
			if code, _, errOut := ctl(t, u, "", "publish", topic, "old"); code != 0 {
				t.Fatalf("publish: exit %d: %s", code, errOut)
			}
			if !tg.fanOut {
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
			if tg.name == "RabbitMQ" {
				if exists := rabbitQueueExists(t, u, topic+"."+m[1]); exists {
					t.Errorf("tail's queue %s.%s is still there after it exited", topic, m[1])
				}
			}
		})
	}
}

// deleteRabbitAfter deletes, when the test ends, the exchanges of topic and
// its dead-letter topic with the quorum queues of their default group: each
// quorum queue holds file handles on the shared node.
func deleteRabbitAfter(t *testing.T, uri, topic string) {
	t.Cleanup(func() {
		conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(cleanupTimeout)})
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		for _, tp := range []string{topic, topic + ".dlq"} {
			_, _ = ch.QueueDelete(tp+"."+broker.DefaultGroup, false, false, false)
			_ = ch.ExchangeDelete(tp, false, false)
		}
	})
}

// rabbitQueueExists reports whether the queue exists, by declaring it
// passively.
func rabbitQueueExists(t *testing.T, uri, queue string) bool {
	t.Helper()
	conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(cleanupTimeout)})
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

// deleteKafkaAfter deletes, when the test ends, topic, its dead-letter topic,
// the dead-letter topic of that (which the dlq commands' consumer creates
// under create_topics) and the default group's consumer groups.
func deleteKafkaAfter(t *testing.T, brokers []string, topic string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
		topics := []string{topic, topic + ".dlq", topic + ".dlq.dlq"}
		var groups []string
		for _, tp := range topics {
			groups = append(groups, broker.DefaultGroup+"/"+tp)
		}
		_, _ = c.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: groups})
		_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics})
	})
}

// deleteSQSAfter deletes the queues of topic and its dead-letter topic (and
// the dead-letter queue the adapter created for that) when the test ends.
func deleteSQSAfter(t *testing.T, endpoint, topic string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		c := sqs.NewFromConfig(aws.Config{
			Region:      "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider("brokerkit", "brokerkit", ""),
		}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
		for _, tp := range []string{topic, topic + ".dlq", topic + ".dlq.dlq"} {
			name, _, err := sqsbroker.QueueName(tp)
			if err != nil {
				continue
			}
			if out, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)}); err == nil {
				_, _ = c.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
			}
		}
	})
}
