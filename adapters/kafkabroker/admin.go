package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerkit/broker"
	"github.com/segmentio/kafka-go"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// adminTimeout bounds one metadata or admin request made on the caller's
// behalf when the caller's context has no deadline.
const adminTimeout = 15 * time.Second

// admin owns the kafka-go transport of a publisher or consumer and answers
// the questions about topics: does it exist, create it, which partitions.
//
// The transport caches cluster metadata for up to 6 s and serves metadata
// requests from that cache, so a topic created by someone else looks missing
// until the next refresh. Existence is therefore decided by a fresh request
// (freshTopics), and the cache is refreshed when it disagrees (refresh).
type admin struct {
	brokers   []string
	opts      Options
	addr      net.Addr
	transport *kafka.Transport
	client    *kafka.Client

	refs atomic.Int32 // owners (a sender, a receiver); the last release closes

	relearned atomic.Int64 // when relearn last dropped the pools, UnixNano
	relearns  atomic.Int64 // how many times it did, for tests

	mu    sync.Mutex
	known map[string]bool // topics seen to exist
}

func newAdmin(brokers []string, opts Options) *admin {
	t := opts.transport()
	addr := kafka.TCP(brokers...)
	return &admin{
		brokers:   brokers,
		opts:      opts,
		addr:      addr,
		transport: t,
		client:    &kafka.Client{Addr: addr, Transport: t, Timeout: adminTimeout},
		known:     map[string]bool{},
	}
}

// retain adds an owner; release drops one and closes the transport's
// connections when none is left.
func (a *admin) retain() *admin {
	a.refs.Add(1)
	return a
}

func (a *admin) release() {
	if a.refs.Add(-1) == 0 {
		a.transport.CloseIdleConnections()
	}
}

// relearn makes the transport learn the cluster's layout afresh, at most
// once a second: a request routed by a stale layout (a partition leader that
// moved, partitions added) fails until kafka-go's metadata refresh, every 6
// seconds or less, names the leader. The transport refreshes on its own
// schedule only, but a new connection pool starts with a fresh metadata
// request, so relearn drops the pools: requests in flight finish on theirs,
// the next ones open new connections.
func (a *admin) relearn() {
	now := time.Now().UnixNano()
	last := a.relearned.Load()
	if now-last < int64(time.Second) || !a.relearned.CompareAndSwap(last, now) {
		return
	}
	a.relearns.Add(1)
	a.transport.CloseIdleConnections()
}

// misrouted reports whether a fetch failed because the transport's view of
// the cluster is out of date: the partition is not in it (added since), or
// its leader is not where it says (moved), or that broker is gone. relearn
// is the remedy. (Publishing does not relearn: tried, a publisher that
// relearned on its failed Produce requests while Kafka restarted failed
// 30-49 publishes in the restart test instead of 2, its fresh pools
// starting without a layout; its fallback Writer retries instead.)
func misrouted(err error) bool {
	var route *fetchapi.Error // the transport found no route in its layout
	return errors.As(err, &route) ||
		errors.Is(err, kafka.NotLeaderForPartition) || errors.Is(err, kafka.LeaderNotAvailable) ||
		errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, kafka.BrokerNotAvailable) ||
		errors.Is(err, kafka.FencedLeaderEpoch) || errors.Is(err, kafka.UnknownLeaderEpoch)
}

func (a *admin) isKnown(topic string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.known[topic]
}

func (a *admin) setKnown(topics ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range topics {
		a.known[t] = true
	}
}

// forget drops topic from the known set, after the broker said it is missing.
func (a *admin) forget(topic string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.known, topic)
}

// topicInfo is what a fresh metadata request says of an existing topic.
type topicInfo struct {
	partitions []int // sorted ids
	ready      bool  // every partition has a leader
}

// freshTopics asks the cluster, bypassing every cache, which of topics exist.
// It never creates a topic.
func (a *admin) freshTopics(ctx context.Context, topics ...string) (map[string]topicInfo, error) {
	t := a.opts.transport()
	t.MetadataTopics = topics
	defer t.CloseIdleConnections()
	c := &kafka.Client{Addr: a.addr, Transport: t, Timeout: adminTimeout}
	res, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	out := map[string]topicInfo{}
	for _, tp := range res.Topics {
		if tp.Error != nil {
			if errors.Is(tp.Error, kafka.UnknownTopicOrPartition) {
				continue
			}
			return nil, tp.Error
		}
		info := topicInfo{ready: len(tp.Partitions) > 0}
		for _, p := range tp.Partitions {
			info.partitions = append(info.partitions, p.ID)
			info.ready = info.ready && p.Error == nil && p.Leader.Host != ""
		}
		slices.Sort(info.partitions)
		out[tp.Name] = info
	}
	return out, nil
}

// refresh makes the shared transport's metadata cache include topic, which
// freshTopics has just seen. A metadata request that allows topic creation is
// the one kafka-go sends to the broker instead of answering from its cache;
// as the topic exists, nothing is created.
func (a *admin) refresh(ctx context.Context, topic string) error {
	_, err := a.transport.RoundTrip(ctx, a.addr, &metadataAPI.Request{
		TopicNames:             []string{topic},
		AllowAutoTopicCreation: true,
	})
	return err
}

// ensure returns nil once every topic exists, creating the missing ones when
// Options.CreateTopics is set, and otherwise an error wrapping
// broker.ErrNotFound that names them.
func (a *admin) ensure(ctx context.Context, topics ...string) error {
	var check []string
	for _, t := range topics {
		if !a.isKnown(t) && !slices.Contains(check, t) {
			check = append(check, t)
		}
	}
	if len(check) == 0 {
		return nil
	}
	found, err := a.freshTopics(ctx, check...)
	if err != nil {
		return wrap(ctx, fmt.Sprintf("look up topics %q", check), err)
	}
	var missing []string
	for _, t := range check {
		if _, ok := found[t]; ok {
			a.setKnown(t)
		} else {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !a.opts.CreateTopics {
		return fmt.Errorf("kafka: topic(s) %q do not exist (create them, or set create_topics=true): %w", missing, broker.ErrNotFound)
	}
	return a.create(ctx, a.opts.Partitions, missing...)
}

// create creates topics with partitions partitions (zero: the configured
// count, else the broker's default) and the configured replication factor;
// topics that already exist are not an error.
func (a *admin) create(ctx context.Context, partitions int, topics ...string) error {
	if partitions == 0 {
		partitions = a.opts.Partitions
	}
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		cfg := kafka.TopicConfig{Topic: t, NumPartitions: -1, ReplicationFactor: -1}
		if partitions > 0 {
			cfg.NumPartitions = partitions
		}
		if a.opts.ReplicationFactor > 0 {
			cfg.ReplicationFactor = a.opts.ReplicationFactor
		}
		req.Topics = append(req.Topics, cfg)
	}
	res, err := a.client.CreateTopics(ctx, req)
	if err != nil {
		return wrap(ctx, fmt.Sprintf("create topics %q", topics), err)
	}
	for _, t := range topics {
		if err := res.Errors[t]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return wrap(ctx, fmt.Sprintf("create topic %q", t), err)
		}
	}
	a.setKnown(topics...)
	return nil
}

// partitions returns the partition ids of topic, from the transport's cache
// when it knows the topic, else from a fresh request. A missing topic is an
// error wrapping broker.ErrNotFound.
func (a *admin) partitions(ctx context.Context, topic string) ([]int, error) {
	res, err := a.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err == nil && len(res.Topics) == 1 && res.Topics[0].Error == nil && len(res.Topics[0].Partitions) > 0 {
		ids := make([]int, 0, len(res.Topics[0].Partitions))
		for _, p := range res.Topics[0].Partitions {
			ids = append(ids, p.ID)
		}
		slices.Sort(ids)
		return ids, nil
	}
	found, ferr := a.freshTopics(ctx, topic)
	if ferr != nil {
		if err == nil {
			err = ferr
		}
		return nil, wrap(ctx, fmt.Sprintf("look up topic %q", topic), err)
	}
	info, ok := found[topic]
	if !ok {
		return nil, fmt.Errorf("kafka: topic %q does not exist: %w: %w", topic, broker.ErrNotFound, kafka.UnknownTopicOrPartition)
	}
	_ = a.refresh(ctx, topic)
	return info.partitions, nil
}

// createAndWait creates topics and waits until a fresh metadata request lists
// every partition of each with a leader, and every partition answers a
// ListOffsets request: then the topics are usable by anyone at once.
func (a *admin) createAndWait(ctx context.Context, partitions int, topics ...string) error {
	if err := a.create(ctx, partitions, topics...); err != nil {
		return err
	}
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
		found, err := a.freshTopics(ctx, topics...)
		ready := err == nil
		for _, t := range topics {
			ready = ready && found[t].ready
		}
		// Listed with leaders is not yet usable: for a few milliseconds a
		// partition's leader may still answer NOT_LEADER_OR_FOLLOWER. Every
		// partition answering ListOffsets is.
		for _, t := range topics {
			if ready {
				_, err := a.spans(ctx, t)
				ready = err == nil
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}
