package kafkabroker

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/brokerkit/broker"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
)

// Acks is how many replicas must have a message before Publish returns.
type Acks int

const (
	// AcksAll waits for every in-sync replica (acks=all, -1): the default, and
	// the only setting under which an accepted message survives the loss of the
	// partition leader.
	AcksAll Acks = iota
	// AcksLeader waits for the partition leader only (acks=1).
	AcksLeader
	// AcksNone does not wait at all (acks=0): Publish returns before the broker
	// has the message, so it may be lost without an error.
	AcksNone
)

func (a Acks) required() kafka.RequiredAcks {
	switch a {
	case AcksLeader:
		return kafka.RequireOne
	case AcksNone:
		return kafka.RequireNone
	}
	return kafka.RequireAll
}

func (a Acks) String() string {
	switch a {
	case AcksAll:
		return "all"
	case AcksLeader:
		return "leader"
	case AcksNone:
		return "none"
	}
	return fmt.Sprintf("Acks(%d)", int(a))
}

// InitialOffset is where a consumer group starts on a partition for which it
// has no committed offset.
type InitialOffset int

const (
	// Earliest starts at the oldest retained message: a new group receives
	// everything the topic still holds, including what was published before the
	// group first ran. The default.
	Earliest InitialOffset = iota
	// Latest starts at the end: a new group receives only messages published
	// after it joined.
	Latest
)

func (o InitialOffset) String() string {
	switch o {
	case Earliest:
		return "earliest"
	case Latest:
		return "latest"
	}
	return fmt.Sprintf("InitialOffset(%d)", int(o))
}

func (o InitialOffset) kafka() int64 {
	if o == Latest {
		return kafka.LastOffset
	}
	return kafka.FirstOffset
}

// Defaults of Options, applied to zero fields.
const (
	DefaultBatchTimeout      = 200 * time.Microsecond
	DefaultBatchSize         = 500
	DefaultPublishAttempts   = 5
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxMessageSize    = 1048588 // the broker's default message.max.bytes
	DefaultCommitInterval    = 200 * time.Millisecond
	DefaultHeartbeatInterval = time.Second
	DefaultSessionTimeout    = 10 * time.Second
	DefaultRebalanceTimeout  = 15 * time.Second
	DefaultMaxWait           = 500 * time.Millisecond
	DefaultDialTimeout       = 10 * time.Second
	DefaultClientID          = "brokerkit"
)

// Options configure a Broker's publishers and consumers. The zero value is
// valid and production-safe: acks from all in-sync replicas, a 200 µs batch
// window, no compression, no topic creation, plain TCP. Each field has a URL
// query parameter (TLS and SASL through several; see the package
// documentation).
type Options struct {
	// Acks is how many replicas must store a message before Publish returns.
	// Zero means AcksAll.
	Acks Acks
	// BatchTimeout is how long a small Publish made while many others are in
	// flight on the same publisher (see the package documentation) waits for
	// more messages to fill a partition's batch, so that its callers share
	// batches. Other Publishes are sent at once. Zero means
	// DefaultBatchTimeout (kafka-go's own default is 1 s).
	BatchTimeout time.Duration
	// BatchSize is how many messages one produce request carries at the most:
	// a Publish sent at once is split into requests of BatchSize messages, and
	// a shared batch is sent without waiting for BatchTimeout when it holds
	// BatchSize messages. Zero means DefaultBatchSize.
	//
	// kafka-go allocates room for BatchSize messages (about 150 bytes each)
	// in every batch it starts, however few it then holds, so a size far
	// above the batches a publisher really forms only makes garbage: with 8
	// goroutines publishing 100 messages at a time, 500 was 1.15x as fast as
	// 1000 (250: 1.26x); with 1000 at a time 1.03x (250: 0.90x); with 10 at a
	// time the same (bench/kafkabench).
	BatchSize int
	// Compression compresses record batches: kafka.Gzip, kafka.Snappy,
	// kafka.Lz4 or kafka.Zstd. Zero means none.
	Compression kafka.Compression
	// PublishAttempts bounds how many times a batch is sent to a partition
	// leader when the broker reports a retriable error, with backoff between
	// 100 ms and 1 s. Zero means DefaultPublishAttempts.
	PublishAttempts int
	// WriteTimeout bounds one produce request. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxMessageSize is the largest record batch the broker takes, in bytes:
	// the topic's max.message.bytes, by default the broker's message.max.bytes.
	// A message whose encoded record does not fit alone in a batch of that size
	// is refused with broker.ErrMessageTooLarge before anything is sent. Zero
	// means DefaultMaxMessageSize, Kafka's default.
	MaxMessageSize int

	// CreateTopics lets publishers create the topics they publish to, and
	// consumers the topic they consume and its dead-letter topic, when missing,
	// with Partitions and ReplicationFactor. False (the default) means a
	// missing topic is an error wrapping broker.ErrNotFound; topics are then
	// created by whoever operates the cluster.
	CreateTopics bool
	// Partitions is the partition count of topics created under CreateTopics.
	// Zero means the broker's num.partitions.
	Partitions int
	// ReplicationFactor is the replica count of created topics. Zero means
	// the broker's default.replication.factor.
	ReplicationFactor int

	// InitialOffset is where a group starts on a partition it has never
	// committed. Zero means Earliest.
	InitialOffset InitialOffset
	// GroupIDVerbatim uses ConsumerOptions.Group itself as the Kafka consumer
	// group id. By default the id is "<group>/<topic>", so that one group name
	// consuming several topics forms one Kafka group per topic (Kafka group
	// ids span topics; sharing one would rebalance every topic whenever any
	// consumer joins or leaves). Set it to join a group shared with other
	// Kafka clients.
	GroupIDVerbatim bool
	// CommitInterval is how often acknowledged offsets are committed, in one
	// request for all partitions of a subscription; Close commits the rest.
	// Zero means DefaultCommitInterval.
	CommitInterval time.Duration
	// HeartbeatInterval is how often a group member heartbeats; it bounds how
	// long a rebalance waits for this member to notice it. Zero means
	// DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// SessionTimeout is how long the group coordinator waits for a heartbeat
	// before it evicts a member that vanished without leaving. The broker
	// accepts 6 s to 30 min by default. Zero means DefaultSessionTimeout.
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the coordinator waits for members to rejoin
	// during a rebalance. Zero means DefaultRebalanceTimeout.
	RebalanceTimeout time.Duration
	// MaxWait is how long one Fetch request waits on the broker for new
	// messages before it comes back empty; a message that arrives meanwhile
	// comes back at once. Zero means DefaultMaxWait.
	MaxWait time.Duration

	// ClientID is sent to the broker with every request, for its logs and
	// quotas. Empty means DefaultClientID.
	ClientID string
	// TLS, when not nil, is used for every connection to the brokers.
	TLS *tls.Config
	// SASL, when not nil, authenticates every connection: plain.Mechanism or
	// the result of scram.Mechanism from kafka-go's sasl packages.
	SASL sasl.Mechanism
	// DialTimeout bounds establishing one connection, TLS and SASL included.
	// Zero means DefaultDialTimeout.
	DialTimeout time.Duration
}

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.BatchTimeout, DefaultBatchTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.CommitInterval, DefaultCommitInterval)
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.SessionTimeout, DefaultSessionTimeout)
	def(&c.RebalanceTimeout, DefaultRebalanceTimeout)
	def(&c.MaxWait, DefaultMaxWait)
	def(&c.DialTimeout, DefaultDialTimeout)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PublishAttempts == 0 {
		c.PublishAttempts = DefaultPublishAttempts
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	return c
}

// minMessageSize is the smallest MaxMessageSize that leaves room for a record.
const minMessageSize = framingReserve + 64

func validate(brokers []string, o Options) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("kafka: "+format+": %w", append(args, broker.ErrInvalidArgument)...)
	}
	if len(brokers) == 0 {
		return bad("no broker addresses")
	}
	for _, b := range brokers {
		if _, _, err := net.SplitHostPort(b); err != nil || strings.ContainsAny(b, "/?#@ ") {
			return bad("broker address %q: want host:port", b)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"BatchTimeout", o.BatchTimeout}, {"WriteTimeout", o.WriteTimeout}, {"CommitInterval", o.CommitInterval},
		{"HeartbeatInterval", o.HeartbeatInterval}, {"SessionTimeout", o.SessionTimeout},
		{"RebalanceTimeout", o.RebalanceTimeout}, {"MaxWait", o.MaxWait}, {"DialTimeout", o.DialTimeout},
	} {
		if d.v < 0 {
			return bad("Options.%s %v is negative", d.name, d.v)
		}
	}
	switch {
	case o.Acks < AcksAll || o.Acks > AcksNone:
		return bad("Options.Acks %d is not AcksAll, AcksLeader or AcksNone", int(o.Acks))
	case o.InitialOffset != Earliest && o.InitialOffset != Latest:
		return bad("Options.InitialOffset %d is not Earliest or Latest", int(o.InitialOffset))
	case o.BatchSize < 0, o.PublishAttempts < 0, o.Partitions < 0, o.ReplicationFactor < 0:
		return bad("negative count in Options (BatchSize %d, PublishAttempts %d, Partitions %d, ReplicationFactor %d)",
			o.BatchSize, o.PublishAttempts, o.Partitions, o.ReplicationFactor)
	case o.MaxMessageSize != 0 && o.MaxMessageSize < minMessageSize:
		return bad("Options.MaxMessageSize %d is below the minimum of %d", o.MaxMessageSize, minMessageSize)
	case o.HeartbeatInterval != 0 && o.SessionTimeout != 0 && o.HeartbeatInterval >= o.SessionTimeout:
		return bad("Options.HeartbeatInterval %v must be shorter than SessionTimeout %v", o.HeartbeatInterval, o.SessionTimeout)
	}
	switch o.Compression {
	case 0, kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd:
	default:
		return bad("Options.Compression %d is not a kafka-go codec", int(o.Compression))
	}
	return nil
}

// transport returns the kafka-go transport every request but fetches and
// group membership goes through (those use the dialer).
func (o Options) transport() *kafka.Transport {
	return &kafka.Transport{
		DialTimeout: o.DialTimeout,
		ClientID:    o.ClientID,
		TLS:         o.TLS,
		SASL:        o.SASL,
	}
}

func (o Options) dialer() *kafka.Dialer {
	return &kafka.Dialer{
		ClientID:      o.ClientID,
		Timeout:       o.DialTimeout,
		DualStack:     true,
		TLS:           o.TLS,
		SASLMechanism: o.SASL,
	}
}
