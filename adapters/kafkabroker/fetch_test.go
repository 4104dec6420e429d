package kafkabroker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/kafkabroker"
	"github.com/brokerkit/broker/internal/testenv"
)

// Every codec a publisher can compress with comes back intact through the
// consumer's fetches: keys, headers, bodies small and large (120 kB, more
// than kafka-go's pages hold).
func TestConsumeCompressed(t *testing.T) {
	for _, codec := range []kafka.Compression{kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			b := newBroker(t, &kafkabroker.Options{Compression: codec})
			topic := newTopic(t, b, 2)
			p := b.NewPublisher()
			defer p.Close()
			sent := map[string]*broker.Message{}
			var msgs []*broker.Message
			for i := range 60 {
				body := bytes.Repeat([]byte{byte(i)}, 10+i)
				if i%20 == 0 {
					body = bytes.Repeat([]byte("large "), 20_000) // 120 kB
				}
				m := &broker.Message{Key: fmt.Sprintf("k%d", i%7), Body: body, Headers: map[string]string{"n": fmt.Sprint(i)}}
				msgs = append(msgs, m)
			}
			if err := p.Publish(context.Background(), topic, msgs...); err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				sent[m.ID] = m
			}
			c, err := b.NewConsumer(&broker.ConsumerOptions{Group: "compressed"})
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu  sync.Mutex
				got = map[string]bool{}
			)
			run(t, c, topic, func(_ context.Context, m *broker.Message) error {
				want := sent[m.ID]
				if want == nil || m.Key != want.Key || !bytes.Equal(m.Body, want.Body) || m.Headers["n"] != want.Headers["n"] {
					t.Errorf("received %q key %q headers %v body %d bytes: not what was sent", m.ID, m.Key, m.Headers, len(m.Body))
				}
				mu.Lock()
				got[m.ID] = true
				mu.Unlock()
				return nil
			})
			waitFor(t, "every message", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(sent) })
		})
	}
}

// A group whose committed offset is past the end of its partition (the
// topic was recreated, or retention removed what it had not read) starts
// over at the initial offset instead of waiting there forever.
func TestCommittedOffsetOutOfRangeStartsOver(t *testing.T) {
	b := newBroker(t, nil)
	topic := newTopic(t, b, 1)
	p := b.NewPublisher()
	defer p.Close()
	msgs := []*broker.Message{{Body: []byte("a")}, {Body: []byte("b")}, {Body: []byte("c")}}
	if err := p.Publish(context.Background(), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	const group = "out-of-range"
	res, err := client(t).OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{
		GroupID:      kafkabroker.GroupID(group, topic),
		GenerationID: -1,
		Topics:       map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: 1000}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range res.Topics[topic] {
		if pr.Error != nil {
			t.Fatalf("committing offset 1000: %v", pr.Error)
		}
	}
	got := collectBodies(t, b, topic, group)
	waitFor(t, "the three messages", func() bool { return len(got()) >= 3 })
	if fmt.Sprint(got()) != "[a b c]" {
		t.Fatalf("received %v, want [a b c]", got())
	}
}

// collectBodies consumes topic as a member of group and returns a function
// that lists the bodies received so far, in order.
func collectBodies(t *testing.T, b *kafkabroker.Broker, topic, group string) func() []string {
	t.Helper()
	c, err := b.NewConsumer(&broker.ConsumerOptions{Group: group})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got []string
	)
	run(t, c, topic, func(_ context.Context, m *broker.Message) error {
		mu.Lock()
		got = append(got, string(m.Body))
		mu.Unlock()
		return nil
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// Partitions added to a topic while a group consumes it are picked up (the
// generation watching the partition count ends, the next one assigns them)
// and their messages delivered, with nothing lost from the others.
func TestPartitionsAddedWhileConsuming(t *testing.T) {
	b := newBroker(t, nil)
	topic := newTopic(t, b, 1)
	c, err := b.NewConsumer(&broker.ConsumerOptions{Group: "growing"})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu         sync.Mutex
		got        = map[string]bool{}
		partitions = map[int]bool{}
	)
	run(t, c, topic, func(_ context.Context, m *broker.Message) error {
		var km kafka.Message
		if !m.As(&km) {
			t.Error("As(*kafka.Message) = false")
		}
		mu.Lock()
		got[m.ID] = true
		partitions[km.Partition] = true
		mu.Unlock()
		return nil
	})
	publish := func(p broker.Publisher, prefix string) []string {
		var ids []string
		for i := range 30 {
			m := &broker.Message{ID: fmt.Sprintf("%s-%d", prefix, i), Key: fmt.Sprintf("key-%d", i), Body: []byte("x")}
			if err := p.Publish(context.Background(), topic, m); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, m.ID)
		}
		return ids
	}
	p := b.NewPublisher()
	defer p.Close()
	ids := publish(p, "before")
	waitFor(t, "the first messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(ids) })

	res, err := client(t).CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 3}},
	})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatalf("CreatePartitions: %v", err)
	}
	waitFor(t, "3 partitions with leaders", func() bool { return partitionCount(t, topic) == 3 })
	// A new Broker: its metadata lists the new partitions at once, so 30
	// keys spread over all three.
	p2 := newBroker(t, nil).NewPublisher()
	defer p2.Close()
	ids = append(ids, publish(p2, "after")...)
	waitFor(t, "every message", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(ids) })
	mu.Lock()
	defer mu.Unlock()
	if len(partitions) != 3 {
		t.Fatalf("messages came from partitions %v, want all 3", partitions)
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("message %s lost", id)
		}
	}
}

// A transactional producer (the Java client, which kafka-go is not) writes
// committed and aborted transactions; the consumer, reading committed data,
// receives the committed records only, in order, and none of the
// transaction markers.
func TestConsumeSkipsAbortedTransactions(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	classpath, err := exec.Command("bash", filepath.Join("..", "..", "scripts", "brokers.sh"), "classpath", "kafka").Output()
	if err == nil {
		_, err = exec.LookPath("java")
	}
	if err != nil {
		msg := fmt.Sprintf("no Kafka Java client to write transactions with (scripts/brokers.sh up kafka installs one): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	b := newBroker(t, nil)
	topic := newTopic(t, b, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	steps := "commit:c1:c2,abort:a1:a2:a3,commit:c3,abort:a4,commit:c4:c5"
	out, err := exec.CommandContext(ctx, "java", "-cp", strings.TrimSpace(string(classpath)),
		filepath.Join("testdata", "TxnProducer.java"), strings.Join(brokers, ","), topic, steps).CombinedOutput()
	if err != nil {
		t.Fatalf("TxnProducer: %v\n%s", err, out)
	}
	const group = "read-committed"
	got := collectBodies(t, b, topic, group)
	waitFor(t, "the 5 committed records", func() bool { return len(got()) >= 5 })
	// The last commit marker is the partition's last record: once the group
	// committed past it, nothing else can arrive.
	p := b.NewPublisher()
	defer p.Close()
	waitFor(t, "the group at the end of the partition", func() bool {
		st, err := p.Stats(context.Background(), topic, group)
		return err == nil && st.Lag == 0
	})
	if fmt.Sprint(got()) != "[c1 c2 c3 c4 c5]" {
		t.Fatalf("received %v, want the committed [c1 c2 c3 c4 c5]", got())
	}
}
