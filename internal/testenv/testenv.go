package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// Environment variables that point tests at running services.
const (
	EnvAMQPURL      = "BROKERKIT_AMQP_URL"      // amqp://user:pass@host:port/vhost
	EnvKafkaBrokers = "BROKERKIT_KAFKA_BROKERS" // host:port[,host:port...]
	EnvSQSEndpoint  = "BROKERKIT_SQS_ENDPOINT"  // http://host:port
	EnvRedisURL     = "BROKERKIT_REDIS_URL"     // redis://host:port/db
	EnvPostgresURL  = "BROKERKIT_POSTGRES_URL"  // postgres://user:pass@host:port/db?sslmode=disable
)

// dialTimeout bounds the check that a service named by an environment variable answers.
const dialTimeout = 3 * time.Second

// AMQPURL returns the AMQP 0-9-1 URL of a RabbitMQ node with quorum queues.
func AMQPURL(t testing.TB) string {
	t.Helper()
	return resolve(t, rabbitMQ, host)
}

// KafkaBrokers returns the bootstrap addresses (host:port) of an Apache Kafka cluster.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	return splitList(resolve(t, kafka, host))
}

// SQSEndpoint returns the base URL of an SQS-compatible endpoint (ElasticMQ), for
// aws-sdk-go-v2's BaseEndpoint with static credentials; any region is accepted.
func SQSEndpoint(t testing.TB) string {
	t.Helper()
	return resolve(t, sqs, host)
}

// RedisURL returns a redis:// URL, as redis.ParseURL accepts it.
func RedisURL(t testing.TB) string {
	t.Helper()
	return resolve(t, redis, host)
}

// PostgresURL returns a postgres:// URL of a database the tests may create tables in.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return resolve(t, postgres, host)
}

// service describes one kind of broker or database that tests may need.
type service struct {
	name        string                 // as people call it, for messages
	envVar      string                 // where the endpoint comes from first
	defaultPort map[string]string      // URL scheme -> port; nil: a host:port list
	start       func() (string, error) // starts a container and returns the endpoint
}

// system is what resolve asks of the machine, replaceable in tests.
type system struct {
	getenv func(string) string
	docker func() bool // a Docker engine answers
	dial   func(addr string) error
}

var host = system{
	getenv: os.Getenv,
	docker: dockerReachable,
	dial: func(addr string) error {
		c, err := net.DialTimeout("tcp", addr, dialTimeout)
		if err != nil {
			return err
		}
		return c.Close()
	},
}

// source says where a service's endpoint comes from.
type source int

const (
	fromEnv       source = iota + 1 // the environment variable
	fromContainer                   // a container started with testcontainers-go
	skipTest                        // nowhere; skip the test
	failTest                        // nowhere, in CI; fail the test
)

// decide picks the source of an endpoint: the environment variable wins, then a
// reachable Docker engine; without either, tests skip locally and fail in CI.
func decide(envSet, docker, ci bool) source {
	switch {
	case envSet:
		return fromEnv
	case docker:
		return fromContainer
	case ci:
		return failTest
	default:
		return skipTest
	}
}

// resolve returns the endpoint of svc, or ends the test by t.Skip or t.Fatal.
func resolve(t testing.TB, svc service, sys system) string {
	t.Helper()
	value := strings.TrimSpace(sys.getenv(svc.envVar))
	docker := value == "" && sys.docker()
	ci := sys.getenv("CI") == "true"
	switch decide(value != "", docker, ci) {
	case fromEnv:
		if err := checkReachable(svc, value, sys.dial); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		return value
	case fromContainer:
		endpoint, err := shared(svc)
		if err != nil {
			t.Fatalf("testenv: starting %s with Docker: %v", svc.name, err)
		}
		return endpoint
	case failTest:
		t.Fatalf("testenv: %s (CI=true, so this fails instead of skipping)", unavailable(svc))
	default:
		t.Skipf("testenv: %s", unavailable(svc))
	}
	return ""
}

// unavailable says that svc is missing and how to provide it.
func unavailable(svc service) string {
	return fmt.Sprintf("no %s for this test: %s is not set and no Docker engine is reachable; "+
		"run `make brokers-up` (native brokers on 127.0.0.1) and "+
		"`eval \"$(scripts/brokers.sh env)\"`, or start Docker", svc.name, svc.envVar)
}

// checkReachable dials every address in value. Errors name the service and the
// variable but never repeat the value, which may hold a password.
func checkReachable(svc service, value string, dial func(string) error) error {
	addrs, err := hostPorts(svc, value)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", svc.name, svc.envVar, err)
	}
	for _, addr := range addrs {
		if err := dial(addr); err != nil {
			return fmt.Errorf("%s at %s (from %s) does not answer within %v: %w; "+
				"is it running? `make brokers-up` starts native brokers",
				svc.name, addr, svc.envVar, dialTimeout, err)
		}
	}
	return nil
}

var errMalformed = errors.New("malformed endpoint")

// hostPorts extracts the TCP addresses to dial from an endpoint: a URL whose scheme
// svc knows, or, for services without schemes, a comma-separated host:port list.
func hostPorts(svc service, value string) ([]string, error) {
	if svc.defaultPort == nil {
		var addrs []string
		for _, a := range splitList(value) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("%w: want host:port[,host:port...]", errMalformed)
			}
			addrs = append(addrs, a)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("%w: no address", errMalformed)
		}
		return addrs, nil
	}
	u, err := url.Parse(value)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: want a URL with a host", errMalformed)
	}
	port, ok := svc.defaultPort[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("%w: scheme %q is not one of %s", errMalformed, u.Scheme, schemes(svc))
	}
	if p := u.Port(); p != "" {
		port = p
	}
	return []string{net.JoinHostPort(u.Hostname(), port)}, nil
}

func schemes(svc service) string {
	var s []string
	for k := range svc.defaultPort {
		s = append(s, k)
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
