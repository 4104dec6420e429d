package sqsbench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/sqsbroker"
	"github.com/brokerkit/broker/conformance"
	"github.com/brokerkit/broker/internal/sidebyside"
	"github.com/brokerkit/broker/internal/testenv"
)

// The settings both sides share.
const (
	bodySize  = 256
	batchSize = 10 // messages per SendMessageBatch and per ReceiveMessage: the SQS maximum
	senders   = 8  // SendMessageBatch calls in flight (the library's PublishConcurrency default)
	pollers   = 4  // ReceiveMessage calls in flight
	// concurrency is the library consumer's handler count: its prefetch
	// window, 2 x concurrency, is what the raw pollers hold at most
	// (pollers x batchSize), so both keep the same number of messages in flight.
	concurrency = pollers * batchSize / 2
	waitSeconds = 1 // long-poll wait; the queue is never empty for long
)

var body = string(make([]byte, bodySize))

func init() {
	b := []byte(body)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	body = string(b)
}

// The work of one round (package sidebyside runs every variant once a round,
// interleaved, and reports the medians of the per-round ratios to raw): the
// server, not the client, is the bottleneck, and on a shared machine its speed
// drifts, so each library run is compared with the raw run beside it.
const (
	rounds        = 5
	messages      = 10_000
	naiveMessages = 1_000 // one call per message: a tenth, for the same wall time
)

// libraryRound runs work with a new queue and a library publisher made for
// it, and returns the rate of work over `messages`.
func (e *env) libraryRound(b *testing.B, work func(topic string, p broker.Publisher)) float64 {
	topic, _ := queue(b, e.c, e.br)
	p := e.br.NewPublisher()
	defer p.Close()
	return timed(messages, func() { work(topic, p) })
}

// timed runs work and returns its rate over n messages.
func timed(n int, work func()) float64 {
	start := time.Now()
	work()
	return float64(n) / time.Since(start).Seconds()
}

// client is one SDK client, shared by the raw code and the library.
func client(b *testing.B) *sqs.Client {
	endpoint := testenv.SQSEndpoint(b)
	return sqs.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", ""),
	}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// queue creates a fresh standard queue (and the library its dead-letter
// queue), removed after the benchmark.
func queue(b *testing.B, c *sqs.Client, br *sqsbroker.Broker) (topic, url string) {
	topic = conformance.RandomName("bench")
	ctx := context.Background()
	if err := br.CreateQueue(ctx, topic, ""); err != nil {
		b.Fatal(err)
	}
	out, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(topic)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = c.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
		if d, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(topic + "-dlq")}); err == nil {
			_, _ = c.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: d.QueueUrl})
		}
	})
	return topic, *out.QueueUrl
}

type env struct {
	c  *sqs.Client
	br *sqsbroker.Broker
}

func setup(b *testing.B) *env {
	c := client(b)
	br, err := sqsbroker.New(c, &sqsbroker.Options{PublishConcurrency: senders, Pollers: pollers, WaitTime: waitSeconds * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return &env{c: c, br: br}
}

// parallel runs senders goroutines that together take n messages in slices
// of batchSize and pass each slice's bounds to send.
func parallel(b *testing.B, n, workers int, send func(from, to int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				from := int(next.Add(batchSize)) - batchSize
				if from >= n {
					return
				}
				if err := send(from, min(from+batchSize, n)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// rawPublish sends n messages with SendMessageBatch, senders calls at once.
// With withID, each message carries its ID in a message attribute, as the
// library's messages do: the same payload, so the same work for the server.
func rawPublish(b *testing.B, c *sqs.Client, url string, n int, withID bool) {
	ctx := context.Background()
	parallel(b, n, senders, func(from, to int) error {
		in := &sqs.SendMessageBatchInput{QueueUrl: aws.String(url)}
		for i := from; i < to; i++ {
			e := types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i - from)), MessageBody: aws.String(body)}
			if withID {
				e.MessageAttributes = map[string]types.MessageAttributeValue{
					sqsbroker.AttrID: {DataType: aws.String("String"), StringValue: aws.String(broker.NewID())}}
			}
			in.Entries = append(in.Entries, e)
		}
		out, err := c.SendMessageBatch(ctx, in)
		if err == nil && len(out.Failed) > 0 {
			err = fmt.Errorf("%d entries failed", len(out.Failed))
		}
		return err
	})
}

// libPublish publishes n messages, senders goroutines each calling Publish
// with batchSize messages.
func libPublish(b *testing.B, p broker.Publisher, topic string, n int) {
	ctx := context.Background()
	parallel(b, n, senders, func(from, to int) error {
		msgs := make([]*broker.Message, to-from)
		for i := range msgs {
			msgs[i] = &broker.Message{Body: []byte(body)}
		}
		return p.Publish(ctx, topic, msgs...)
	})
}

// BenchmarkPublish: `messages` accepted by SQS a round, each round on a new
// queue; raw batched (bare bodies, and "rawid" with an ID attribute like the
// library's), library, and a naive loop of one SendMessage per message. Run
// with -benchtime 1x.
func BenchmarkPublish(b *testing.B) {
	e := setup(b)
	raw := func(withID bool) func(b *testing.B) float64 {
		return func(b *testing.B) float64 {
			_, url := queue(b, e.c, e.br)
			return timed(messages, func() { rawPublish(b, e.c, url, messages, withID) })
		}
	}
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "raw", Run: raw(false)},
		sidebyside.Case{Name: "library", Run: func(b *testing.B) float64 {
			return e.libraryRound(b, func(topic string, p broker.Publisher) { libPublish(b, p, topic, messages) })
		}},
		sidebyside.Case{Name: "rawid", Run: raw(true)},
		sidebyside.Case{Name: "naive", Run: func(b *testing.B) float64 {
			_, url := queue(b, e.c, e.br)
			ctx := context.Background()
			return timed(naiveMessages, func() {
				for range naiveMessages {
					if _, err := e.c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body)}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}},
	)
}

// rawConsume receives until n messages were handled, with pollers loops of
// ReceiveMessage (up to 10) then DeleteMessageBatch of what came. Receives
// hide messages for 5 seconds, as the library's do (its first lease).
func rawConsume(b *testing.B, c *sqs.Client, url string, n int) {
	var handled atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for handled.Load() < int64(n) {
				out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url),
					MaxNumberOfMessages: batchSize, WaitTimeSeconds: waitSeconds, VisibilityTimeout: 5,
					MessageAttributeNames: []string{"All"}, MessageSystemAttributeNames: []types.MessageSystemAttributeName{"ApproximateReceiveCount", "SentTimestamp"}})
				if err != nil {
					if ctx.Err() == nil {
						b.Error(err)
					}
					return
				}
				if len(out.Messages) == 0 {
					continue
				}

				in := &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url)}
				for i, m := range out.Messages {
					in.Entries = append(in.Entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
				}
				if _, err := c.DeleteMessageBatch(ctx, in); err != nil {
					b.Error(err)
					return
				}
				if handled.Add(int64(len(out.Messages))) >= int64(n) {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
}

// libConsume consumes until n messages were handled and acknowledged, then
// closes the consumer, which flushes the pending deletes.
func libConsume(b *testing.B, br *sqsbroker.Broker, topic string, n int) {
	c, err := br.NewConsumer(&broker.ConsumerOptions{Concurrency: concurrency})
	if err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- c.Consume(ctx, topic, func(context.Context, *broker.Message) error {
			if handled.Add(1) == int64(n) {
				close(done)
			}
			return nil
		})
	}()
	select {
	case <-done:
	case err := <-consumed:
		b.Fatal(err)
	}
	if err := c.Close(); err != nil {
		b.Error(err)
	}
	<-consumed
}

// BenchmarkConsume: `messages` already in a new queue each round, received
// and deleted. Run with -benchtime 1x.
func BenchmarkConsume(b *testing.B) {
	e := setup(b)
	fill := func(b *testing.B) (topic, url string) {
		topic, url = queue(b, e.c, e.br)
		p := e.br.NewPublisher()
		defer p.Close()
		libPublish(b, p, topic, messages) // the same messages for both: with the library's attributes
		return topic, url
	}
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "raw", Run: func(b *testing.B) float64 {
			_, url := fill(b)
			return timed(messages, func() { rawConsume(b, e.c, url, messages) })
		}},
		sidebyside.Case{Name: "library", Run: func(b *testing.B) float64 {
			topic, _ := fill(b)
			return timed(messages, func() { libConsume(b, e.br, topic, messages) })
		}},
	)
}

// BenchmarkEndToEnd: `messages` published and consumed at the same time, on
// a new queue each round. Run with -benchtime 1x.
func BenchmarkEndToEnd(b *testing.B) {
	e := setup(b)
	raw := func(withID bool) func(b *testing.B) float64 {
		return func(b *testing.B) float64 {
			_, url := queue(b, e.c, e.br)
			return timed(messages, func() {
				go rawPublish(b, e.c, url, messages, withID)
				rawConsume(b, e.c, url, messages)
			})
		}
	}
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "raw", Run: raw(false)},
		sidebyside.Case{Name: "library", Run: func(b *testing.B) float64 {
			return e.libraryRound(b, func(topic string, p broker.Publisher) {
				go libPublish(b, p, topic, messages)
				libConsume(b, e.br, topic, messages)
			})
		}},
		sidebyside.Case{Name: "rawid", Run: raw(true)},
	)
}
