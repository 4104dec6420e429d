// Package kafkabroker is the Apache Kafka adapter, on segmentio/kafka-go.
// Importing it registers the "kafka" URL scheme.
//
// A topic is a Kafka topic; a consumer group is a Kafka consumer group; a
// message's Key is the record key, so one key stays on one partition; its ID
// travels in the record header HeaderID, and its Headers in record headers.
//
// # URLs
//
//	kafka://host1:9092,host2:9092?<parameters>
//
// The host list gives the bootstrap brokers; a port left out means 9092.
// Unknown parameters are an error. Publishers and consumers take:
//
//   - acks=all|leader|none (default all): Options.Acks.
//   - batch_timeout=200us, batch_size=500, compression=none|gzip|snappy|lz4|zstd,
//     publish_attempts=5, write_timeout=10s, max_message_size=1048588: the
//     writer (Options fields of the same names).
//   - create_topics=true&partitions=3&replication_factor=1: create missing
//     topics (off by default: a missing topic is broker.ErrNotFound).
//   - client_id, dial_timeout.
//   - tls=true; tls_ca_file, tls_cert_file, tls_key_file (PEM files; any of
//     them turns TLS on); tls_insecure_skip_verify=true (tests only).
//   - sasl_mechanism=plain|scram-sha-256|scram-sha-512 with sasl_user and
//     sasl_password, or with the credentials before the host
//     (kafka://user:password@host:9092?sasl_mechanism=scram-sha-512). The
//     password never appears in errors.
//
// Consumers also take the options of broker.ConsumerOptions (group,
// concurrency, order_by_key, max_attempts, backoff_min, backoff_max,
// drain_timeout, dead_letter_topic) and: initial_offset=earliest|latest,
// group_id_verbatim=true, commit_interval=200ms, heartbeat_interval=1s,
// session_timeout=10s, rebalance_timeout=15s, max_wait=500ms.
//
// # Delivery semantics
//
// Publish returns nil once the partition leader has the messages and, under
// the default acks=all, every in-sync replica too. A keyed message goes to
// the partition the murmur2 hash of its key picks, as the Java client's
// default partitioner does, so Java and Go producers agree on a key's
// partition. The unkeyed messages of one Publish call go to one partition,
// picked at random for each call, batch_size messages at a time, the next
// batch_size to the next partition (the Java client's sticky partitioning):
// a call of unkeyed messages is one request, and a large one is still spread
// over the partitions.
//
// A Publish is sent at once, as one Produce request per partition it
// touches (more for a call larger than max_message_size or batch_size), on
// the publisher's connections: kafka-go's Writer would hold every message for
// its batch timer, which takes about a millisecond however short it is set.
// When more than 16 calls are in flight at once on one publisher, those of
// fewer than 32 messages go through a kafka-go Writer instead, which waits up
// to batch_timeout to put them in shared batches: past that many callers,
// shared batches carry more than separate requests. A request that fails
// (a leader moving, a broker restarting) hands its messages to a kafka-go
// Writer with the publisher's settings, which retries up to publish_attempts
// times; a message written by a request that failed late may so be written
// twice, as a Writer's own retries may. If some messages are written and
// others are not, the error is a *broker.PublishError listing the failed
// ones. A message too large for Options.MaxMessageSize is refused before
// anything is sent. A Publish whose context ends early may still have its
// messages written, also after those of a later Publish with the same key:
// order per key holds between publishes that returned.
//
// A consumer is a member of the Kafka consumer group "<group>/<topic>"
// (Options.GroupIDVerbatim uses the group name alone): Kafka group ids span
// topics, and one id per topic keeps a rebalance of one topic from pausing the
// others. Members of a group share the topic's partitions; every group
// receives every message (fan-out). A group that never committed starts at the
// oldest retained message (Options.InitialOffset), so messages published
// before the group's first run are delivered.
//
// Partitions are processed in parallel; with order_by_key, messages of one key
// (so of one partition) are handled one at a time in offset order. A failed
// message is retried in process after the backoff, its Attempt counted by the
// consumer; after MaxAttempts it is published to the dead-letter topic
// ("<topic>.dlq") and then counts as done. Kafka cannot hand one message back,
// so a partition's committed offset never moves past a message still being
// handled or retried: the consumer commits, per partition, the end of the
// longest run of finished offsets, every commit_interval and on Close, in one
// request for all partitions. Nothing that was not handled (or dead-lettered)
// is ever committed.
//
// Messages can be delivered twice: what was handled after the last commit is
// delivered again when a member stops abruptly, or when a rebalance moves a
// partition to another member while it is in flight. A rebalance that
// hands a partition back to the same member does not redeliver what that
// member already finished or is still handling. Handlers should be idempotent
// (see package idempotency); Message.ID is stable across redeliveries. Per-key
// order holds within a member; while a rebalance moves a partition, the new
// owner may start on a key's messages before the old owner's in-flight
// handler for that key returned.
//
// A consumer reconnects by itself when the cluster restarts; Consume keeps
// running and logs the outage. Stats reports, for a group, the lag (end
// offset minus committed offset, summed over partitions) as Depth and Lag,
// each partition's committed offset, end offset and lag in Partitions, this
// consumer's unsettled deliveries as InFlight (-1 from a publisher, or for a
// group this consumer is not in), the group's member count, and as
// DeadLetters the lag of the dead-letter topic's default group (the group
// package dlq reads with), so parked messages that were redriven no longer
// count.
//
// Topics are not created implicitly: set create_topics, or create them with
// Broker.CreateTopic or the cluster's tools, dead-letter topics included.
// (kafka-go's consumer-group code asks for metadata in a way that lets a broker
// with auto.create.topics.enable create a topic; the adapter checks that the
// topic exists before it joins a group, so it never relies on that.)
//
// # Throughput
//
// A consumer uses kafka-go's ConsumerGroup for membership (join, heartbeats,
// partition assignment, commits) and reads its partitions itself: for each
// partition the group assigns it, one Fetch request at a time to the
// partition's leader, on the connections its publisher side uses too. The
// records of a response are decoded into runs of up to 256 whose portable
// messages and bookkeeping share one allocation (each key and body is copied
// out of kafka-go's pooled buffers into one of its own), and the consumer
// takes a whole run at a time. kafka-go's Reader hands over one message per channel
// operation; measured side by side on a backlog, the consumer receives 1.2x
// to 1.5x as many messages a second as a loop on a Reader with the same
// settings (bench/kafkabench).
//
// Up to four runs per subscription, and one Fetch response (at most 1 MiB,
// or one record batch when that is larger) per partition, are held ahead of
// the handlers. A handler may keep a message's Body after it returns: it is
// the message's own. Keeping the *broker.Message itself keeps its run's
// allocation (184 bytes a message, 47 KB for a full run) until the last message of the run
// is let go.
//
// When a partition's leader moves to another broker, or partitions are added
// to the topic, a fetch routed by the connections' cached view of the
// cluster fails; the consumer then has the connections learn the cluster's
// layout afresh (at most once a second, requests in flight finishing on the
// old connections) instead of waiting for kafka-go's own refresh, up to 6
// seconds away, and retries. A failure is reported (a logged warning, the
// other partitions going on) only when it repeats.
//
// Consumers read committed data only, as the Java consumer does under
// isolation.level=read_committed: records of transactions still open are not
// fetched, records of aborted transactions are skipped (kafka-go's Reader
// delivers them), and so are transaction markers; commits move past the
// skipped records, so a transactional topic's lag reaches 0.
//
// # As
//
// A received message's Native value is the adapter's, not a *kafka.Message
// (keeping one per message would cost 150 bytes each). As builds the record
// the message was received as, on demand: it takes a *kafka.Message or a
// **kafka.Message target (from github.com/segmentio/kafka-go) and fills it
// with partition, offset, high-water mark, timestamp, key, value and the raw
// headers, the ID header among them. Each call returns new copies of the key
// and the headers; the value is the fetched one.
//
//	var km kafka.Message
//	if m.As(&km) {
//		log.Printf("partition %d offset %d", km.Partition, km.Offset)
//	}
package kafkabroker
