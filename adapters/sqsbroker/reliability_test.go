package sqsbroker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/internal/testenv"
)

func reliabilityGate(t *testing.T) {
	if os.Getenv("BROKERKIT_RELIABILITY") != "1" {
		t.Skip("set BROKERKIT_RELIABILITY=1 (make test-reliability) to cut the connection to the broker mid-stream")
	}
}

// proxy forwards TCP connections to the broker and can cut them all and
// refuse new ones for a while: an outage as the client sees it, without
// stopping the broker that other packages' tests share.
type proxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

// cut closes every open connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// outage cuts the connections and refuses new ones for d.
func (p *proxy) outage(d time.Duration) {
	p.down.Store(true)
	p.cut()
	time.Sleep(d)
	p.down.Store(false)
}

// tally counts what happened to the published messages.
type tally struct {
	mu        sync.Mutex
	published map[string]bool
	handled   map[string]int
	dead      map[string]bool
}

func (tl *tally) add(m map[string]bool, id string) { tl.mu.Lock(); m[id] = true; tl.mu.Unlock() }

func (tl *tally) settled() (handled, duplicates, dead, lost int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for id := range tl.published {
		switch n := tl.handled[id]; {
		case n > 0:
			handled++
			duplicates += n - 1
		case tl.dead[id]:
			dead++
		default:
			lost++
		}
	}
	return
}

// TestReliabilityOutageAndRestart publishes while the connection to SQS is
// cut twice, and replaces the consumer mid-stream while handlers run; some
// handlers fail transiently, panic, or fail permanently. Every published
// message must end up handled or dead-lettered.
//
// On FIFO queues the messages carry 10 keys and the consumer orders by key.
func TestReliabilityOutageAndRestart(t *testing.T) {
	reliabilityGate(t)
	for _, fifo := range []bool{false, true} {
		t.Run(map[bool]string{false: "standard", true: "fifo"}[fifo], func(t *testing.T) { outageAndRestart(t, fifo) })
	}
}

func outageAndRestart(t *testing.T, fifo bool) {
	endpoint := testenv.SQSEndpoint(t)
	b0, direct := newBroker(t, nil)
	topic := newTopic(t, b0, direct, fifo)
	target := endpoint[len("http://"):]
	px := newProxy(t, target)
	viaProxy := sqs.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("brokerkit", "brokerkit", ""),
	}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(px.addr()) })
	b, err := sqsbroker.New(viaProxy, &sqsbroker.Options{VisibilityTimeout: 10 * time.Second, WaitTime: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	const total = 3000
	tl := &tally{published: map[string]bool{}, handled: map[string]int{}, dead: map[string]bool{}}
	var attempts atomic.Int64
	handler := func(ctx context.Context, m *broker.Message) error {
		attempts.Add(1)
		i, _ := strconv.Atoi(string(m.Body))
		switch {
		case i%100 == 7:
			return broker.Permanent(errors.New("poison"))
		case i%100 == 13 && m.Attempt == 1:
			panic("handler bug on first attempt")
		case rand.IntN(20) == 0:
			return errors.New("transient")
		}
		select { // a little work, so that handlers are in flight when things break
		case <-time.After(time.Duration(rand.IntN(3)) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		tl.mu.Lock()
		tl.handled[m.ID]++
		tl.mu.Unlock()
		return nil
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := broker.ConsumerOptions{Concurrency: 16, MaxAttempts: 6, DrainTimeout: 50 * time.Millisecond, Logger: logger,
		Backoff: broker.ExponentialBackoff(50*time.Millisecond, time.Second), OrderByKey: fifo}
	start := func(o broker.ConsumerOptions, topic string, h broker.Handler) (stop func()) {
		c, err := b.NewConsumer(&o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Consume(ctx, topic, h) }()
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("Consume: %v", err)
				}
				_ = c.Close()
			})
		}
		t.Cleanup(stop)
		return stop
	}
	stopA := start(opts, topic, handler)
	start(broker.ConsumerOptions{Concurrency: 4, Logger: logger}, topic+".dlq", func(ctx context.Context, m *broker.Message) error {
		tl.add(tl.dead, m.ID)
		return nil
	})

	p := b.NewPublisher()
	defer p.Close()
	var publishRetries int
	publishDone := make(chan struct{})
	go func() {
		defer close(publishDone)
		for i := 0; i < total; i += 50 {
			batch := make([]*broker.Message, 50)
			for j := range batch {
				batch[j] = &broker.Message{Body: []byte(strconv.Itoa(i + j))}
				if fifo {
					batch[j].Key = "k" + strconv.Itoa((i+j)%10)
				}
			}
			for len(batch) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := p.Publish(ctx, topic, batch...)
				cancel()
				failed := map[int]bool{}
				var pe *broker.PublishError
				switch {
				case err == nil:
				case errors.As(err, &pe): // retry only what failed
					for _, f := range pe.Failed {
						failed[f.Index] = true
					}
				default:
					for i := range batch {
						failed[i] = true
					}
				}
				var again []*broker.Message
				tl.mu.Lock()
				for i, m := range batch {
					if failed[i] {
						again = append(again, m)
					} else {
						tl.published[m.ID] = true
					}
				}
				tl.mu.Unlock()
				batch = again
				if err != nil && !broker.IsRetryable(err) {
					t.Errorf("Publish: %v", err)
					return
				}
				if err != nil {
					publishRetries++
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
	}()
	// Break things while messages flow.
	waitFor(t, "the first messages handled", func() bool { h, _, _, _ := tl.settled(); return h > 200 })
	px.outage(3 * time.Second)
	waitFor(t, "more messages handled", func() bool { h, _, _, _ := tl.settled(); return h > 1200 })
	stopA() // handlers in flight are cut short: their messages must come back
	start(opts, topic, handler)
	px.outage(2 * time.Second)
	<-publishDone

	deadline := time.Now().Add(3 * time.Minute)
	for {
		handled, dups, dead, lost := tl.settled()
		if lost == 0 || time.Now().After(deadline) {
			tl.mu.Lock()
			published := len(tl.published)
			tl.mu.Unlock()
			t.Logf("published %d (publish retries %d) / handled %d / duplicates %d / dead-lettered %d / lost %d (handler calls %d)",
				published, publishRetries, handled, dups, dead, lost, attempts.Load())
			if lost != 0 {
				t.Errorf("%d messages lost", lost)
			}
			if published != total {
				t.Errorf("published %d, want %d", published, total)
			}
			if want := total / 100; dead < want {
				t.Errorf("dead-lettered %d, want at least the %d poison messages", dead, want)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
