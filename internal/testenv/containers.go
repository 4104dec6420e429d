package testenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcrabbitmq "github.com/testcontainers/testcontainers-go/modules/rabbitmq"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Images started when a Docker engine is reachable and no endpoint is set.
const (
	rabbitMQImage = "rabbitmq:3.13-alpine"
	kafkaImage    = "confluentinc/confluent-local:7.5.0" // the image the kafka module is built for
	sqsImage      = "softwaremill/elasticmq-native:1.7.1"
	redisImage    = "redis:7-alpine"
	postgresImage = "postgres:16-alpine"
)

// startTimeout bounds the start of one container, image pull included.
const startTimeout = 5 * time.Minute

var (
	rabbitMQ = service{
		name:        "RabbitMQ",
		envVar:      EnvAMQPURL,
		defaultPort: map[string]string{"amqp": "5672", "amqps": "5671"},
		start: func() (string, error) {
			return startContainer(func(ctx context.Context) (testcontainers.Container, string, error) {
				c, err := tcrabbitmq.Run(ctx, rabbitMQImage)
				if err != nil {
					return c, "", err
				}
				u, err := c.AmqpURL(ctx)
				return c, u, err
			})
		},
	}
	kafka = service{
		name:   "Kafka",
		envVar: EnvKafkaBrokers,
		start: func() (string, error) {
			return startContainer(func(ctx context.Context) (testcontainers.Container, string, error) {
				c, err := tckafka.Run(ctx, kafkaImage)
				if err != nil {
					return c, "", err
				}
				brokers, err := c.Brokers(ctx)
				return c, strings.Join(brokers, ","), err
			})
		},
	}
	sqs = service{
		name:        "SQS (ElasticMQ)",
		envVar:      EnvSQSEndpoint,
		defaultPort: map[string]string{"http": "80", "https": "443"},
		start: func() (string, error) {
			return startContainer(func(ctx context.Context) (testcontainers.Container, string, error) {
				c, err := testcontainers.Run(ctx, sqsImage,
					testcontainers.WithExposedPorts("9324/tcp"),
					testcontainers.WithWaitStrategy(wait.ForListeningPort("9324/tcp")))
				if err != nil {
					return c, "", err
				}
				u, err := c.PortEndpoint(ctx, "9324/tcp", "http")
				return c, u, err
			})
		},
	}
	redis = service{
		name:        "Redis",
		envVar:      EnvRedisURL,
		defaultPort: map[string]string{"redis": "6379", "rediss": "6379"},
		start: func() (string, error) {
			return startContainer(func(ctx context.Context) (testcontainers.Container, string, error) {
				c, err := tcredis.Run(ctx, redisImage)
				if err != nil {
					return c, "", err
				}
				u, err := c.ConnectionString(ctx)
				return c, u, err
			})
		},
	}
	postgres = service{
		name:        "PostgreSQL",
		envVar:      EnvPostgresURL,
		defaultPort: map[string]string{"postgres": "5432", "postgresql": "5432"},
		start: func() (string, error) {
			return startContainer(func(ctx context.Context) (testcontainers.Container, string, error) {
				c, err := tcpostgres.Run(ctx, postgresImage,
					tcpostgres.WithDatabase("brokerkit"),
					tcpostgres.WithUsername("brokerkit"),
					tcpostgres.WithPassword("brokerkit"),
					tcpostgres.BasicWaitStrategies())
				if err != nil {
					return c, "", err
				}
				u, err := c.ConnectionString(ctx, "sslmode=disable")
				return c, u, err
			})
		},
	}
)

// started holds one container per service for the whole test binary.
var started struct {
	mu         sync.Mutex
	endpoints  map[string]*sharedEndpoint // by service name
	containers []testcontainers.Container
}

type sharedEndpoint struct {
	once     sync.Once
	endpoint string
	err      error
}

// shared starts svc's container on first use and returns its endpoint to every caller.
func shared(svc service) (string, error) {
	started.mu.Lock()
	if started.endpoints == nil {
		started.endpoints = make(map[string]*sharedEndpoint)
	}
	s := started.endpoints[svc.name]
	if s == nil {
		s = new(sharedEndpoint)
		started.endpoints[svc.name] = s
	}
	started.mu.Unlock()
	s.once.Do(func() { s.endpoint, s.err = svc.start() })
	return s.endpoint, s.err
}

// startContainer runs run with a deadline and records the container for Main to terminate,
// also when run failed half-way.
func startContainer(run func(context.Context) (testcontainers.Container, string, error)) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, endpoint, err := run(ctx)
	if c != nil {
		started.mu.Lock()
		started.containers = append(started.containers, c)
		started.mu.Unlock()
	}
	return endpoint, err
}

// Main runs the package's tests, terminates the containers that testenv started for
// them, and exits with the tests' status. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := terminateAll(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func terminateAll() error {
	started.mu.Lock()
	defer started.mu.Unlock()
	var failed []string
	for _, c := range started.containers {
		if err := testcontainers.TerminateContainer(c); err != nil {
			failed = append(failed, err.Error())
		}
	}
	started.containers = nil
	if len(failed) > 0 {
		return fmt.Errorf("terminating containers: %s", strings.Join(failed, "; "))
	}
	return nil
}
