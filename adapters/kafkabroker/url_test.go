package kafkabroker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
)

// parse reads a URL as OpenConsumer does, without connecting.
func parse(t *testing.T, raw string) ([]string, Options, broker.ConsumerOptions, error) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	hosts, q, err := parseHosts(u)
	if err != nil {
		return nil, Options{}, broker.ConsumerOptions{}, err
	}
	o, err := readOptions(u, q)
	if err == nil {
		err = readConsumerOptions(u, q, &o)
	}
	co := q.ConsumerOptions(broker.ConsumerOptions{})
	if err == nil {
		err = q.Err()
	}
	return hosts, o, co, err
}

func TestURLHostsAndDefaults(t *testing.T) {
	hosts, o, co, err := parse(t, "kafka://k1,k2:9093?group=billing")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"k1:9092", "k2:9093"}; !slices.Equal(hosts, want) {
		t.Errorf("hosts = %v, want %v", hosts, want)
	}
	if co.Group != "billing" {
		t.Errorf("group = %q", co.Group)
	}
	d := o.withDefaults()
	if d.Acks != AcksAll || d.Acks.required() != kafka.RequireAll {
		t.Errorf("default acks = %v", d.Acks)
	}
	if d.BatchTimeout != DefaultBatchTimeout || d.CreateTopics || d.TLS != nil || d.SASL != nil {
		t.Errorf("defaults = %+v", d)
	}
}

func TestURLOptions(t *testing.T) {
	_, o, co, err := parse(t, "kafka://127.0.0.1:9092?acks=leader&batch_timeout=5ms&batch_size=10&compression=zstd"+
		"&publish_attempts=2&write_timeout=3s&max_message_size=2097152&create_topics=true&partitions=6&replication_factor=3"+
		"&client_id=svc&dial_timeout=1s&initial_offset=latest&group_id_verbatim=true&commit_interval=1s"+
		"&heartbeat_interval=2s&session_timeout=20s&rebalance_timeout=30s&max_wait=250ms&order_by_key=true&max_attempts=7")
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Acks: AcksLeader, BatchTimeout: 5 * time.Millisecond, BatchSize: 10, Compression: kafka.Zstd,
		PublishAttempts: 2, WriteTimeout: 3 * time.Second, MaxMessageSize: 2 << 20, CreateTopics: true, Partitions: 6,
		ReplicationFactor: 3, ClientID: "svc", DialTimeout: time.Second, InitialOffset: Latest, GroupIDVerbatim: true,
		CommitInterval: time.Second, HeartbeatInterval: 2 * time.Second, SessionTimeout: 20 * time.Second,
		RebalanceTimeout: 30 * time.Second, MaxWait: 250 * time.Millisecond}
	if o != want {
		t.Errorf("options = %+v\nwant      %+v", o, want)
	}
	if !co.OrderByKey || co.MaxAttempts != 7 {
		t.Errorf("consumer options = %+v", co)
	}
}

func TestURLRejects(t *testing.T) {
	for _, raw := range []string{
		"kafka://h:9092?nonsense=1",
		"kafka://h:9092?acks=2",
		"kafka://h:9092?compression=brotli",
		"kafka://h:9092?batch_timeout=soon",
		"kafka://h:9092?initial_offset=middle",
		"kafka://h:9092/path",
		"kafka://h:9092,,h2:9092",
		"kafka://h:9092?sasl_mechanism=gssapi&sasl_user=u",
		"kafka://h:9092?sasl_mechanism=plain",
		"kafka://h:9092?sasl_user=u&sasl_password=p",
		"kafka://u:p@h:9092?sasl_mechanism=plain&sasl_user=v",
		"kafka://h:9092?tls=false&tls_insecure_skip_verify=true",
		"kafka://h:9092?tls_cert_file=/nonexistent.pem",
		"kafka://h:9092?tls_ca_file=/nonexistent.pem",
	} {
		t.Run(raw, func(t *testing.T) {
			_, _, _, err := parse(t, raw)
			if !errors.Is(err, broker.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

// One URL serves a service's publisher and consumers: a publisher checks the
// consumer parameters, the adapter's own too, and ignores them.
func TestURLPublisherIgnoresConsumerParameters(t *testing.T) {
	p, err := broker.OpenPublisher(context.Background(), "kafka://127.0.0.1:1?group=g&initial_offset=latest&commit_interval=1s")
	if err != nil {
		t.Fatalf("OpenPublisher with consumer parameters: %v", err)
	}
	_ = p.Close()
	_, err = broker.OpenPublisher(context.Background(), "kafka://127.0.0.1:1?initial_offset=middle")
	if !errors.Is(err, broker.ErrInvalidArgument) || !strings.Contains(err.Error(), "initial_offset") {
		t.Fatalf("err = %v, want ErrInvalidArgument naming initial_offset", err)
	}
}

func TestURLOpensWithoutConnecting(t *testing.T) {
	p, err := broker.OpenPublisher(context.Background(), "kafka://127.0.0.1:1?acks=all")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := broker.OpenConsumer(context.Background(), "kafka://127.0.0.1:1?group=g&concurrency=4")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestURLSASL(t *testing.T) {
	_, o, _, err := parse(t, "kafka://alice:s3cret@h:9092?sasl_mechanism=plain")
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := o.SASL.(plain.Mechanism); !ok || m.Username != "alice" || m.Password != "s3cret" {
		t.Errorf("SASL = %#v", o.SASL)
	}
	for _, mech := range []string{"scram-sha-256", "SCRAM-SHA-512"} {
		_, o, _, err := parse(t, "kafka://h:9092?sasl_mechanism="+mech+"&sasl_user=bob&sasl_password=hunter2")
		if err != nil {
			t.Fatal(err)
		}
		if o.SASL == nil || !strings.EqualFold(o.SASL.Name(), mech) {
			t.Errorf("%s: SASL = %v", mech, o.SASL)
		}
	}
}

// The password never appears in an error, whichever way it was given.
func TestURLErrorsRedactPassword(t *testing.T) {
	for _, raw := range []string{
		"kafka://h:9092?sasl_mechanism=plain&sasl_user=u&sasl_password=TOPSECRET&bogus=1",
		"kafka://u:TOPSECRET@h:9092?bogus=1",
		"kafka://u:TOPSECRET@h:9092?sasl_mechanism=kerberos",
	} {
		_, err := broker.OpenConsumer(context.Background(), raw)
		if err == nil || strings.Contains(err.Error(), "TOPSECRET") {
			t.Errorf("%s: err = %v", raw, err)
		}
	}
}

func TestURLTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	_, o, _, err := parse(t, "kafka://h:9093?tls_ca_file="+certFile+"&tls_cert_file="+certFile+"&tls_key_file="+keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS == nil || o.TLS.RootCAs == nil || len(o.TLS.Certificates) != 1 || o.TLS.InsecureSkipVerify {
		t.Fatalf("TLS = %+v", o.TLS)
	}
	_, o, _, err = parse(t, "kafka://h:9093?tls=true")
	if err != nil || o.TLS == nil || o.TLS.RootCAs != nil {
		t.Fatalf("tls=true: %+v, %v", o.TLS, err)
	}
	// A key file that is not a key: the error names the files, not their content.
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("PRIVATE STUFF"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = parse(t, "kafka://h:9093?tls_cert_file="+certFile+"&tls_key_file="+bad)
	if !errors.Is(err, broker.ErrInvalidArgument) || strings.Contains(err.Error(), "PRIVATE") {
		t.Fatalf("err = %v", err)
	}
}

func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kafka-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestOptionsValidate(t *testing.T) {
	for name, o := range map[string]Options{
		"acks":        {Acks: 7},
		"offset":      {InitialOffset: 3},
		"negative":    {BatchTimeout: -1},
		"partitions":  {Partitions: -1},
		"tiny":        {MaxMessageSize: 10},
		"heartbeat":   {HeartbeatInterval: 10 * time.Second, SessionTimeout: 6 * time.Second},
		"compression": {Compression: 42},
	} {
		if _, err := New([]string{"h:9092"}, &o); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	for _, brokers := range [][]string{nil, {"no-port"}, {"h:9092/x"}} {
		if _, err := New(brokers, nil); !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("brokers %q: err = %v, want ErrInvalidArgument", brokers, err)
		}
	}
}
