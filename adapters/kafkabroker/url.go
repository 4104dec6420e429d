package kafkabroker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Scheme is the URL scheme this package registers.
const Scheme = "kafka"

// DefaultPort is the port of a broker address given without one.
const DefaultPort = "9092"

func init() { broker.Register(Scheme, opener{}) }

type opener struct{}

func (opener) OpenPublisher(ctx context.Context, u *url.URL) (broker.Publisher, error) {
	brokers, q, err := parseHosts(u)
	if err != nil {
		return nil, err
	}
	opts, err := readOptions(u, q)
	if err != nil {
		return nil, err
	}
	// One URL serves a service's publisher and consumers: the consumer
	// parameters are checked and ignored here.
	if err := readConsumerOptions(u, q, &Options{}); err != nil {
		return nil, err
	}
	q.SkipConsumerOptions()
	if err := q.Err(); err != nil {
		return nil, err
	}
	b, err := New(brokers, &opts)
	if err != nil {
		return nil, err
	}
	return b.NewPublisher(), nil
}

func (opener) OpenConsumer(ctx context.Context, u *url.URL, base broker.ConsumerOptions) (broker.Consumer, error) {
	brokers, q, err := parseHosts(u)
	if err != nil {
		return nil, err
	}
	opts, err := readOptions(u, q)
	if err != nil {
		return nil, err
	}
	if err := readConsumerOptions(u, q, &opts); err != nil {
		return nil, err
	}
	co := q.ConsumerOptions(base)
	if err := q.Err(); err != nil {
		return nil, err
	}
	b, err := New(brokers, &opts)
	if err != nil {
		return nil, err
	}
	return b.NewConsumer(&co)
}

// urlError reports a problem with u, credentials redacted.
func urlError(u *url.URL, format string, args ...any) error {
	return fmt.Errorf("kafka: URL %q: %s: %w", broker.Redact(u.String()), fmt.Sprintf(format, args...), broker.ErrInvalidArgument)
}

// parseHosts splits the comma-separated broker list of u, adding DefaultPort
// where a host has none.
func parseHosts(u *url.URL) ([]string, *driver.Query, error) {
	if u.Path != "" && u.Path != "/" || u.Fragment != "" || u.Opaque != "" {
		return nil, nil, urlError(u, "want kafka://host1:9092,host2:9092?params")
	}
	var brokers []string
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			return nil, nil, urlError(u, "empty broker address")
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, DefaultPort)
		}
		brokers = append(brokers, h)
	}
	return brokers, driver.NewQuery(u), nil
}

// readOptions reads the connection and publishing parameters of u.
func readOptions(u *url.URL, q *driver.Query) (Options, error) {
	var o Options
	switch a := q.String("acks", "all"); a {
	case "all", "-1":
		o.Acks = AcksAll
	case "leader", "1":
		o.Acks = AcksLeader
	case "none", "0":
		o.Acks = AcksNone
	default:
		return o, urlError(u, "acks=%q: want all, leader or none", a)
	}
	o.BatchTimeout = q.Duration("batch_timeout", 0)
	o.BatchSize = q.Int("batch_size", 0)
	switch c := q.String("compression", "none"); c {
	case "none":
	case "gzip":
		o.Compression = kafka.Gzip
	case "snappy":
		o.Compression = kafka.Snappy
	case "lz4":
		o.Compression = kafka.Lz4
	case "zstd":
		o.Compression = kafka.Zstd
	default:
		return o, urlError(u, "compression=%q: want none, gzip, snappy, lz4 or zstd", c)
	}
	o.PublishAttempts = q.Int("publish_attempts", 0)
	o.WriteTimeout = q.Duration("write_timeout", 0)
	o.MaxMessageSize = q.Int("max_message_size", 0)
	o.CreateTopics = q.Bool("create_topics", false)
	o.Partitions = q.Int("partitions", 0)
	o.ReplicationFactor = q.Int("replication_factor", 0)
	o.ClientID = q.String("client_id", "")
	o.DialTimeout = q.Duration("dial_timeout", 0)
	var err error
	if o.TLS, err = readTLS(u, q); err != nil {
		return o, err
	}
	if o.SASL, err = readSASL(u, q); err != nil {
		return o, err
	}
	return o, nil
}

// readConsumerOptions reads the consumer-only parameters of u into o.
func readConsumerOptions(u *url.URL, q *driver.Query, o *Options) error {
	switch v := q.String("initial_offset", "earliest"); v {
	case "earliest":
	case "latest":
		o.InitialOffset = Latest
	default:
		return urlError(u, "initial_offset=%q: want earliest or latest", v)
	}
	o.GroupIDVerbatim = q.Bool("group_id_verbatim", false)
	o.CommitInterval = q.Duration("commit_interval", 0)
	o.HeartbeatInterval = q.Duration("heartbeat_interval", 0)
	o.SessionTimeout = q.Duration("session_timeout", 0)
	o.RebalanceTimeout = q.Duration("rebalance_timeout", 0)
	o.MaxWait = q.Duration("max_wait", 0)
	return nil
}

// readTLS builds the TLS configuration: tls=true, or any tls_* file, turns it
// on; tls_ca_file adds a PEM CA bundle to the system roots, tls_cert_file and
// tls_key_file give a client certificate, tls_insecure_skip_verify turns off
// server verification (never in production).
func readTLS(u *url.URL, q *driver.Query) (*tls.Config, error) {
	on := q.Bool("tls", false)
	ca := q.String("tls_ca_file", "")
	cert := q.String("tls_cert_file", "")
	key := q.String("tls_key_file", "")
	skip := q.Bool("tls_insecure_skip_verify", false)
	if _, given := u.Query()["tls"]; given && !on && (ca != "" || cert != "" || key != "" || skip) {
		return nil, urlError(u, "tls=false contradicts the tls_* parameters")
	}
	if !on && ca == "" && cert == "" && key == "" && !skip {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skip}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, urlError(u, "tls_ca_file: %v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, urlError(u, "tls_ca_file %q holds no PEM certificate", ca)
		}
		c.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, urlError(u, "tls_cert_file and tls_key_file go together")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			// The error may quote key material; say only which files.
			return nil, urlError(u, "tls_cert_file %q and tls_key_file %q do not load as a certificate and its key", cert, key)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// readSASL builds the SASL mechanism from sasl_mechanism and the credentials,
// given as sasl_user and sasl_password or as the URL's user information.
func readSASL(u *url.URL, q *driver.Query) (sasl.Mechanism, error) {
	mech := q.String("sasl_mechanism", "")
	user := q.String("sasl_user", "")
	pass := q.String("sasl_password", "")
	if u.User != nil {
		if user != "" || pass != "" {
			return nil, urlError(u, "credentials given both before the host and as sasl_user/sasl_password")
		}
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	if mech == "" {
		if user != "" || pass != "" {
			return nil, urlError(u, "credentials without sasl_mechanism (plain, scram-sha-256 or scram-sha-512)")
		}
		return nil, nil
	}
	if user == "" {
		return nil, urlError(u, "sasl_mechanism=%s needs a user name", mech)
	}
	switch strings.ToLower(mech) {
	case "plain":
		return plain.Mechanism{Username: user, Password: pass}, nil
	case "scram-sha-256":
		return scramMechanism(u, scram.SHA256, user, pass)
	case "scram-sha-512":
		return scramMechanism(u, scram.SHA512, user, pass)
	}
	return nil, urlError(u, "sasl_mechanism=%q: want plain, scram-sha-256 or scram-sha-512", mech)
}

func scramMechanism(u *url.URL, alg scram.Algorithm, user, pass string) (sasl.Mechanism, error) {
	m, err := scram.Mechanism(alg, user, pass)
	if err != nil {
		// Not err's text: it may come from preparing the password.
		return nil, urlError(u, "SCRAM credentials for user %q are not valid UTF-8 strings", user)
	}
	return m, nil
}
