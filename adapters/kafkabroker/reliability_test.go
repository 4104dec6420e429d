package kafkabroker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
)

// brokersScript runs scripts/brokers.sh with args, for stopping and starting
// the native Kafka.
func brokersScript(t *testing.T, args ...string) error {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join("..", "..", "scripts", "brokers.sh")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("brokers.sh %v: %v\n%s", args, err, out)
	}
	return nil
}

// stoppable skips t unless BROKERKIT_RELIABILITY=1 and Kafka is run by
// scripts/brokers.sh (with CI=true, fails instead).
func stoppable(t *testing.T) {
	t.Helper()
	if os.Getenv("BROKERKIT_RELIABILITY") != "1" {
		t.Skip("set BROKERKIT_RELIABILITY=1 (make test-reliability): this test stops and starts Kafka")
	}
	if err := brokersScript(t, "status", "kafka"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but Kafka is not run by scripts/brokers.sh, so this test cannot stop it: %v", err)
		}
		t.Skipf("Kafka is not run by scripts/brokers.sh, so this test cannot stop it: %v", err)
	}
}

// restartAtEnd starts Kafka again when t ends, whatever happened, for the
// cleanups registered before it (deleting topics) and the next test.
func restartAtEnd(t *testing.T) {
	t.Cleanup(func() {
		if err := brokersScript(t, "up", "kafka"); err != nil {
			t.Errorf("restarting Kafka: %v", err)
		}
	})
}

// TestReliabilityKafkaRestart publishes 20,000 messages over 4 partitions to a
// group of two consumers, and stops and starts Kafka while they flow. Every
// message must be handled; duplicates are counted, not failed.
func TestReliabilityKafkaRestart(t *testing.T) {
	stoppable(t)
	const (
		total     = 20_000
		batchSize = 100
		restartAt = 5_000
		group     = "reliability"
	)
	b := newBroker(t, nil)
	topic := newTopic(t, b, 4)
	restartAtEnd(t)

	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var consumers sync.WaitGroup
	for i := range 2 {
		// Separate Brokers: separate connections, as two processes would have.
		c, err := newBroker(t, nil).NewConsumer(&broker.ConsumerOptions{
			Group: group, Concurrency: 8, Logger: log.With("consumer", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			defer c.Close()
			err := c.Consume(ctx, topic, func(ctx context.Context, m *broker.Message) error {
				mu.Lock()
				handled[m.ID]++
				mu.Unlock()
				return nil
			})
			if err != nil && ctx.Err() == nil {
				t.Errorf("consumer %d: Consume: %v", i, err)
			}
		}()
	}

	p := b.NewPublisher()
	defer p.Close()
	var published atomic.Int64
	var publishErrors int
	restarted := make(chan error, 1)
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	// publish sends msgs with one Publish call until it succeeds.
	publish := func(msgs ...*broker.Message) {
		for {
			if time.Now().After(deadline) {
				t.Fatalf("published %d of %d before the deadline", published.Load(), total)
			}
			pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
			err := p.Publish(pctx, topic, msgs...)
			pcancel()
			if err == nil {
				break
			}
			// A failed or partly failed batch is sent again whole: the
			// messages that did land become duplicates, which is allowed.
			publishErrors++
			if !broker.IsRetryable(err) {
				t.Fatalf("Publish: %v (not retryable)", err)
			}
			time.Sleep(200 * time.Millisecond) // pace the retries while Kafka is down
		}
		published.Add(int64(len(msgs)))
	}
	lone := 0
	for n := 0; n < total; n += batchSize {
		batch := make([]*broker.Message, batchSize)
		for i := range batch {
			batch[i] = &broker.Message{ID: fmt.Sprintf("r-%05d", n+i), Key: fmt.Sprintf("k-%d", (n+i)%50), Body: []byte("payload")}
		}
		if n/batchSize%4 == 3 {
			// Every fourth batch goes one message per Publish, so that the
			// one-message path (one Produce request, the Writer after a failure)
			// meets the outage too.
			for _, m := range batch {
				publish(m)
			}
			lone += len(batch)
		} else {
			publish(batch...)
		}
		if n+batchSize == restartAt {
			go func() {
				t.Logf("stopping Kafka after %d messages", restartAt)
				err := brokersScript(t, "down", "kafka")
				if err == nil {
					t.Logf("Kafka stopped; starting it again")
					err = brokersScript(t, "up", "kafka")
				}
				t.Logf("Kafka is back after %v (err %v)", time.Since(start), err)
				restarted <- err
			}()
		}
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restarting Kafka: %v", err)
	}
	count := func() (unique, dups int) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range handled {
			dups += c - 1
		}
		return len(handled), dups
	}
	for {
		if u, _ := count(); u >= total {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	consumers.Wait()

	unique, dups := count()
	lost := 0
	for i := range total {
		if handled[fmt.Sprintf("r-%05d", i)] == 0 {
			lost++
		}
	}
	var dead int64
	if st, err := b.NewPublisher().Stats(context.Background(), topic, group); err == nil {
		dead = st.DeadLetters
	}
	t.Logf("published %d (%d of them one per Publish; %d publish errors retried), handled %d unique, duplicates %d, dead-lettered %d, lost %d, in %v",
		published.Load(), lone, publishErrors, unique, dups, dead, lost, time.Since(start).Round(time.Millisecond))
	if lost != 0 {
		t.Fatalf("%d messages lost", lost)
	}
}

// TestReliabilityKafkaConsumerStartsFirst starts a consumer while Kafka is
// down, as a service may boot before its broker: once Kafka is up, the
// consumer joins by itself and receives what was published before the
// outage and what is published after it, without a restart of the caller.
func TestReliabilityKafkaConsumerStartsFirst(t *testing.T) {
	stoppable(t)
	b := newBroker(t, nil)
	topic := newTopic(t, b, 3)
	restartAtEnd(t)
	batch := func(prefix string) []*broker.Message {
		msgs := make([]*broker.Message, 100)
		for i := range msgs {
			msgs[i] = &broker.Message{ID: fmt.Sprintf("%s-%03d", prefix, i), Key: fmt.Sprintf("k%d", i%10), Body: []byte("x")}
		}
		return msgs
	}
	p := b.NewPublisher()
	defer p.Close()
	if err := p.Publish(context.Background(), topic, batch("before")...); err != nil {
		t.Fatal(err)
	}
	cb := newBroker(t, nil) // its own connections, as another process would have
	if err := brokersScript(t, "down", "kafka"); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		handled = map[string]bool{}
	)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := cb.NewConsumer(&broker.ConsumerOptions{Group: "starts-first", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, c, topic, func(_ context.Context, m *broker.Message) error {
		mu.Lock()
		handled[m.ID] = true
		mu.Unlock()
		return nil
	})
	time.Sleep(3 * time.Second) // the consumer runs against a cluster that is down
	mu.Lock()
	early := len(handled)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d messages handled while Kafka was down", early)
	}
	start := time.Now()
	if err := brokersScript(t, "up", "kafka"); err != nil {
		t.Fatal(err)
	}
	t.Logf("Kafka is up after %v", time.Since(start).Round(time.Millisecond))
	if err := p.Publish(context.Background(), topic, batch("after")...); err != nil {
		t.Fatalf("publishing after the outage: %v", err)
	}
	waitFor(t, "the 200 messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == 200 })
	t.Logf("200 of 200 handled %v after Kafka was started", time.Since(start).Round(time.Millisecond))
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume: %v", err)
	}
}
