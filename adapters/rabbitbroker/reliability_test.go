package rabbitbroker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/rabbitbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/testenv"
)

// TestReliabilityBrokerRestart restarts the RabbitMQ node (the application,
// where the node is not run by scripts/brokers.sh) while 5,000
// messages flow, and checks that every published message is handled.
func TestReliabilityBrokerRestart(t *testing.T) {
	if os.Getenv("BROKERKIT_RELIABILITY") != "1" {
		t.Skip("set BROKERKIT_RELIABILITY=1 (make test-reliability) to restart RabbitMQ mid-stream")
	}
	uri := testenv.AMQPURL(t)
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rabbitmqctl not on PATH: the restart test needs the native broker (scripts/brokers.sh)")
		}
		t.Skip("rabbitmqctl not on PATH: the restart test needs the native broker (scripts/brokers.sh)")
	}
	const total = 5000
	topic := conformance.RandomName("rmq-restart")
	rabbitbroker.DeleteTopicAfter(t, uri, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	pub, err := rabbitbroker.NewPublisher(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cons, err := rabbitbroker.NewConsumer(ctx, uri, nil, &broker.ConsumerOptions{
		Concurrency: 8, Logger: logger, Backoff: broker.ExponentialBackoff(50*time.Millisecond, time.Second)})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	seen := map[string]int{}
	var handled atomic.Int64
	consumeCtx, stopConsume := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		consumed <- cons.Consume(consumeCtx, topic, func(ctx context.Context, m *broker.Message) error {
			mu.Lock()
			seen[m.ID]++
			mu.Unlock()
			handled.Add(1)
			return nil
		})
	}()

	// The publisher retries what failed until the broker accepts it; IDs are
	// fixed up front, so a retried message is recognisable as a duplicate.
	var published, retries atomic.Int64
	pubDone := make(chan error, 1)
	go func() {
		for i := 0; i < total; i += 10 {
			batch := make([]*broker.Message, 10)
			for j := range batch {
				batch[j] = &broker.Message{ID: fmt.Sprintf("m-%05d", i+j), Key: fmt.Sprintf("k%d", j), Body: []byte("payload")}
			}
			for len(batch) > 0 {
				err := pub.Publish(ctx, topic, batch...)
				if err == nil {
					published.Add(int64(len(batch)))
					break
				}
				if !broker.IsRetryable(err) {
					pubDone <- fmt.Errorf("publish: %w", err)
					return
				}
				retries.Add(1)
				var pe *broker.PublishError
				if errors.As(err, &pe) {
					published.Add(int64(len(batch) - len(pe.Failed)))
					var again []*broker.Message
					for _, f := range pe.Failed {
						again = append(again, batch[f.Index])
					}
					batch = again
				}
				select {
				case <-time.After(200 * time.Millisecond):
				case <-ctx.Done():
					pubDone <- ctx.Err()
					return
				}
			}
			time.Sleep(5 * time.Millisecond) // keep the flow going across the restart
		}
		pubDone <- nil
	}()

	waitFor(t, ctx, "1000 messages handled before the restart", func() bool { return handled.Load() >= 1000 })
	start := time.Now()
	what := "node"
	if brokersScript("status", "rabbitmq") == nil {
		// A full node restart. (RabbitMQ 3.10 does not restart the supervisor
		// of quorum-queue dead-lettering after "stop_app; start_app", so any
		// quorum queue declared afterwards fails with INTERNAL_ERROR: the
		// application restart would break every later test on this node.)
		if err := brokersScript("down", "rabbitmq"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := brokersScript("up", "rabbitmq"); err != nil {
				t.Errorf("starting RabbitMQ again: %v", err)
			}
		})
	} else {
		what = "application"
		rabbitmqctl(t, ctl, "stop_app")
	}
	stopped := time.Since(start)
	if what == "node" {
		if err := brokersScript("up", "rabbitmq"); err != nil {
			t.Fatal(err)
		}
	} else {
		rabbitmqctl(t, ctl, "start_app")
	}
	t.Logf("RabbitMQ %s stopped in %v and started again in %v; %d published, %d handled at restart",
		what, stopped.Round(time.Millisecond), (time.Since(start) - stopped).Round(time.Millisecond), published.Load(), handled.Load())

	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	unique := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	waitFor(t, ctx, fmt.Sprintf("%d unique messages handled", total), func() bool { return unique() >= total })
	stopConsume()
	if err := <-consumed; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Consume: %v", err)
	}
	st, err := cons.Stats(context.Background(), topic, "")
	if err != nil {
		t.Errorf("Stats: %v", err)
	}
	_ = cons.Close()

	mu.Lock()
	defer mu.Unlock()
	lost, dups := 0, 0
	for i := range total {
		n := seen[fmt.Sprintf("m-%05d", i)]
		if n == 0 {
			lost++
		}
		dups += max(n-1, 0)
	}
	t.Logf("published %d (publish calls retried %d times), handled %d, unique %d, duplicates %d, dead-lettered %d, lost %d",
		published.Load(), retries.Load(), handled.Load(), len(seen), dups, st.DeadLetters, lost)
	if lost != 0 {
		t.Errorf("%d messages lost", lost)
	}
	if published.Load() < total {
		t.Errorf("only %d of %d messages were accepted", published.Load(), total)
	}
}

// brokersScript runs scripts/brokers.sh with args.
func brokersScript(args ...string) error {
	cmd := exec.Command("bash", append([]string{filepath.Join("..", "..", "scripts", "brokers.sh")}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("brokers.sh %v: %v\n%s", args, err, out)
	}
	return nil
}

func rabbitmqctl(t *testing.T, ctl, cmd string) {
	t.Helper()
	c := exec.Command(ctl, "-q", cmd)
	c.Env = os.Environ()
	if os.Getenv("RABBITMQ_NODENAME") == "" {
		c.Env = append(c.Env, "RABBITMQ_NODENAME=rabbit@localhost") // as scripts/brokers.sh starts it
	}
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl %s: %v: %s", cmd, err, strings.TrimSpace(string(out)))
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
