// Package brokertest gives tests the brokers brokerkit supports as a table of
// targets: the in-memory broker and the real RabbitMQ, Apache Kafka and SQS
// (ElasticMQ) that internal/testenv finds.
//
// A Target hands a test the broker's URL, as an operator would write it, and
// deletes what the test creates on the broker for its topic when the test
// ends: the topic, its dead-letter topic "<topic>.dlq" (and that one's,
// "<topic>.dlq.dlq"), and their consumer groups. Real brokers are shared by
// every test run on the machine, and on RabbitMQ each quorum queue left
// behind holds file handles until the node refuses connections.
//
// Where the endpoint comes from, and when a test is skipped or failed for
// want of a broker, is internal/testenv's decision.
//
// Only tests import this package; no other code may.
package brokertest

import (
	"maps"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/internal/testenv"
)

// Target is one broker that tests run against. The zero Target is not usable;
// take one of Mem, RabbitMQ, Kafka and SQS.
type Target struct {
	// Name names the broker in subtests: "mem", "RabbitMQ", "Kafka" or "SQS".
	Name string
	// Capabilities are what the broker's adapter declares. SQS declares
	// OrderedByKey, which it keeps on FIFO queues only.
	Capabilities broker.Capabilities

	// endpoint finds the broker with testenv, skipping or failing the test
	// without one; nil for the in-memory broker, which needs none.
	endpoint func(t testing.TB) string
	// url returns the broker's URL with the query q, which has the defaults.
	url func(t testing.TB, endpoint string, q url.Values) string
	// defaults is the query every URL of the broker has unless Options.Query
	// sets the parameter.
	defaults url.Values
	// remove deletes topics, and the groups' queues or offsets on them.
	remove func(t testing.TB, endpoint string, topics, groups []string)
}

// The targets. Every one of them is safe to use from parallel tests.
var (
	// Mem is the in-memory broker "mem://brokertest", which every test of a
	// test binary shares.
	Mem = Target{
		Name:         "mem",
		Capabilities: broker.Capabilities{FanOut: true, OrderedByKey: true},
		url: func(_ testing.TB, _ string, q url.Values) string {
			return withQuery("mem://brokertest", q)
		},
	}
	// RabbitMQ is the node at testenv.AMQPURL.
	RabbitMQ = Target{
		Name:         "RabbitMQ",
		Capabilities: broker.Capabilities{FanOut: true, OrderedByKey: true},
		endpoint:     testenv.AMQPURL,
		url:          func(_ testing.TB, uri string, q url.Values) string { return withQuery(uri, q) },
		remove:       deleteRabbit,
	}
	// Kafka is the cluster at testenv.KafkaBrokers. Its URLs create topics,
	// with 3 partitions, when publishing or consuming needs them.
	Kafka = Target{
		Name:         "Kafka",
		Capabilities: broker.Capabilities{FanOut: true, OrderedByKey: true},
		endpoint:     func(t testing.TB) string { return strings.Join(testenv.KafkaBrokers(t), ",") },
		url: func(_ testing.TB, brokers string, q url.Values) string {
			return (&url.URL{Scheme: "kafka", Host: brokers, RawQuery: q.Encode()}).String()
		},
		defaults: url.Values{"create_topics": {"true"}, "partitions": {"3"}},
		remove:   deleteKafka,
	}
	// SQS is the ElasticMQ endpoint at testenv.SQSEndpoint. Its URLs create
	// standard queues (and their dead-letter queues) when needed. A URL also
	// sets, for the test, the AWS environment variables that give the adapter
	// credentials ElasticMQ accepts, so t must not be parallel.
	SQS = Target{
		Name:         "SQS",
		Capabilities: broker.Capabilities{OrderedByKey: true},
		endpoint:     testenv.SQSEndpoint,
		url: func(t testing.TB, endpoint string, q url.Values) string {
			// A URL carries no credentials: they come from the AWS default chain.
			t.Setenv("AWS_ACCESS_KEY_ID", accessKey)
			t.Setenv("AWS_SECRET_ACCESS_KEY", secretKey)
			t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			q.Set("endpoint", endpoint)
			return "sqs://?" + q.Encode()
		},
		defaults: url.Values{"region": {region}, "create_queues": {"true"}},
		remove:   deleteSQS,
	}
)

// All returns every target: Mem, then the real brokers.
func All() []Target { return []Target{Mem, RabbitMQ, Kafka, SQS} }

// Real returns the real brokers: RabbitMQ, Kafka and SQS.
func Real() []Target { return []Target{RabbitMQ, Kafka, SQS} }

// Options adjust a target's URL and what is deleted after the test. A nil
// *Options is the same as a zero one.
type Options struct {
	// Query holds query parameters for the URL; each replaces the target's
	// default of the same name.
	Query url.Values
	// Groups are the consumer groups, besides broker.DefaultGroup, that the
	// test consumes the topic or its dead-letter topics in: their RabbitMQ
	// queues and Kafka offsets are deleted with the topics.
	Groups []string
}

// URL returns the target's URL, as an operator would write it, for a test on
// topic, and deletes what the test creates for topic when t ends (see
// DeleteAfter). It skips t when the broker is not available, and fails it when
// CI=true.
func (tg Target) URL(t testing.TB, topic string, o *Options) string {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	var endpoint string
	if tg.endpoint != nil {
		endpoint = tg.endpoint(t)
	}
	u := tg.url(t, endpoint, tg.query(o))
	tg.deleteAfter(t, endpoint, topic, o.Groups)
	return u
}

// query returns the target's default query with o.Query's parameters in.
func (tg Target) query(o *Options) url.Values {
	q := maps.Clone(tg.defaults)
	if q == nil {
		q = url.Values{}
	}
	maps.Copy(q, o.Query)
	return q
}

// DeleteAfter deletes, when t ends, topic, its dead-letter topics and, on
// them, the queues or offsets of broker.DefaultGroup and of groups; what does
// not exist is passed over, and failures are logged. It skips t when the
// broker is not available, and fails it when CI=true. On Mem it does nothing.
func (tg Target) DeleteAfter(t testing.TB, topic string, groups ...string) {
	t.Helper()
	if tg.endpoint == nil {
		return
	}
	tg.deleteAfter(t, tg.endpoint(t), topic, groups)
}

// Delete deletes now what DeleteAfter deletes at the end of the test, for
// tests and benchmarks that go through many topics.
func (tg Target) Delete(t testing.TB, topic string, groups ...string) {
	t.Helper()
	if tg.endpoint == nil {
		return
	}
	tg.remove(t, tg.endpoint(t), deadLetterChain(topic), withDefaultGroup(groups))
}

func (tg Target) deleteAfter(t testing.TB, endpoint, topic string, groups []string) {
	if tg.remove == nil {
		return
	}
	topics, groups := deadLetterChain(topic), withDefaultGroup(groups)
	t.Cleanup(func() { tg.remove(t, endpoint, topics, groups) })
}

// SQSClient returns a client of the endpoint at testenv.SQSEndpoint, with
// static credentials that ElasticMQ accepts. It skips t when there is no such
// endpoint, and fails it when CI=true.
func SQSClient(t testing.TB) *sqs.Client {
	t.Helper()
	return newSQSClient(testenv.SQSEndpoint(t))
}

// ElasticMQ accepts any credentials and region.
const (
	region    = "us-east-1"
	accessKey = "brokerkit"
	secretKey = "brokerkit"
)

func newSQSClient(endpoint string) *sqs.Client {
	return sqs.NewFromConfig(aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
	}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// withQuery returns raw with the parameters of q added to its query.
func withQuery(raw string, q url.Values) string {
	switch {
	case len(q) == 0:
		return raw
	case strings.Contains(raw, "?"):
		return raw + "&" + q.Encode()
	default:
		return raw + "?" + q.Encode()
	}
}

// deadLetterChain returns topic, its dead-letter topic, and the dead-letter
// topic of that, which a consumer of the dead-letter topic may create.
func deadLetterChain(topic string) []string {
	return []string{topic, topic + ".dlq", topic + ".dlq.dlq"}
}

// withDefaultGroup returns groups with broker.DefaultGroup first.
func withDefaultGroup(groups []string) []string {
	return append([]string{broker.DefaultGroup}, groups...)
}
