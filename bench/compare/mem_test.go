package compare

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/adapters/membroker"
	"github.com/brokerkit/broker/internal/sidebyside"
)

// BenchmarkMemEndToEnd: a consumer with a no-op handler runs (a warm-up
// message went through), then memMessages 256-byte messages are published by 8
// goroutines in batches of 64, at most memBacklog batches ahead of the
// handlers, and the time runs until the last was handled.
//
//   - brokerkit: membroker with a queue bound large enough never to refuse
//     (GoChannel has none), Concurrency 16.
//   - watermill: GoChannel, not persistent, Publish not blocking until the
//     ack (as brokerkit's Publish returns once the message is stored); one
//     subscription read by 16 goroutines that call the handler and Ack.
//     Acked delivery is GoChannel's behaviour either way: a message is
//     resent to its subscriber until it is acked.
//   - watermill-router: GoChannel behind a Router handler, the usual way to
//     consume with Watermill. The Router starts a goroutine per message and
//     GoChannel hands over every published message at once, so up to the
//     memBacklog messages run at once here, not 16.
func BenchmarkMemEndToEnd(b *testing.B) {
	sidebyside.Compare(b, rounds,
		sidebyside.Case{Name: "watermill", Run: memWatermill},
		sidebyside.Case{Name: "brokerkit", Run: memBrokerkit},
		sidebyside.Case{Name: "watermill-router", Run: memWatermillRouter},
	)
}

const memTopic = "bench"

// memBacklog bounds, in batches of 64, the messages published and not yet
// handled (2048). Without a bound the publishers outrun the handlers and
// both sides slow down as the backlog grows (GoChannel holds two goroutines
// per waiting message), so the figures would depend on the count; with it, each
// side runs at its steady rate.
const memBacklog = 32

func memBrokerkit(b *testing.B) float64 {
	br, err := membroker.New(&membroker.Options{MaxQueued: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	p := br.NewPublisher()
	defer p.Close()
	c, err := br.NewConsumer(&broker.ConsumerOptions{Concurrency: concurrency})
	if err != nil {
		b.Fatal(err)
	}
	return consumeEndToEnd(b, c, memTopic, newGatedCounter(memMessages, memBacklog), brokerkitPublish(p, memTopic))
}

// watermillBatch builds k messages the way Watermill's documentation does,
// with a UUID each (brokerkit's Publish assigns IDs itself).
func watermillBatch(k int) []*message.Message {
	msgs := make([]*message.Message, k)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), body)
	}
	return msgs
}

// drain runs workers goroutines that read msgs, call the no-op handler and
// Ack: the Router's job, with a fixed number of handlers.
func drain(msgs <-chan *message.Message, workers int, cnt *counter) {
	for range workers {
		go func() {
			for m := range msgs {
				cnt.add()
				m.Ack()
			}
		}()
	}
}

func memWatermill(b *testing.B) float64 {
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer ps.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := ps.Subscribe(ctx, memTopic)
	if err != nil {
		b.Fatal(err)
	}
	cnt := newGatedCounter(memMessages, memBacklog)
	drain(msgs, concurrency, cnt)
	publish := watermillPublish(ps, memTopic)
	return cnt.endToEnd(b, publish)
}

func memWatermillRouter(b *testing.B) float64 {
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer ps.Close()
	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	cnt := newGatedCounter(memMessages, memBacklog)
	r.AddConsumerHandler("bench", memTopic, ps, func(*message.Message) error { cnt.add(); return nil })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	defer r.Close()
	<-r.Running()
	publish := watermillPublish(ps, memTopic)
	return cnt.endToEnd(b, publish)
}
