package sqsbroker

import (
	"context"
	"fmt"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// Scheme is the URL scheme this package registers.
const Scheme = "sqs"

func init() { broker.Register(Scheme, opener{}) }

type opener struct{}

// settings are what a URL says, before anything is loaded.
type settings struct {
	region, endpoint string
	opts             Options
}

// parse reads u's adapter parameters; the caller reads the consumer options
// if any, then checks q.Err.
func parse(u *url.URL) (settings, *driver.Query, error) {
	for _, e := range u.Query()["endpoint"] {
		if eu, err := url.Parse(e); err != nil || eu.User != nil {
			// Not echoed: it may hold a password, which Redact does not see in a query value.
			return settings{}, nil, fmt.Errorf("sqs: URL: the endpoint parameter does not parse or holds credentials; "+
				"credentials come from the AWS default chain: %w", broker.ErrInvalidArgument)
		}
	}
	if u.User != nil {
		return settings{}, nil, fmt.Errorf("sqs: URL %q: credentials do not belong in the URL; they come from the AWS default chain "+
			"(environment, shared config, role): %w", broker.Redact(u.String()), broker.ErrInvalidArgument)
	}
	if u.Host != "" || u.Path != "" && u.Path != "/" || u.Opaque != "" {
		return settings{}, nil, fmt.Errorf("sqs: URL %q: want sqs://?region=...&endpoint=... (the queue is the topic): %w",
			broker.Redact(u.String()), broker.ErrInvalidArgument)
	}
	q := driver.NewQuery(u)
	st := settings{
		region:   q.String("region", ""),
		endpoint: q.String("endpoint", ""),
		opts: Options{
			CreateQueues:       q.Bool("create_queues", false),
			VisibilityTimeout:  q.Duration("visibility_timeout", 0),
			WaitTime:           q.Duration("wait_time", 0),
			Pollers:            q.Int("pollers", 0),
			PublishConcurrency: q.Int("publish_concurrency", 0),
			MaxMessageSize:     q.Int("max_message_size", 0),
			MaxReceiveCount:    q.Int("max_receive_count", 0),
		},
	}
	if st.endpoint != "" {
		if e, _ := url.Parse(st.endpoint); e.Scheme != "http" && e.Scheme != "https" || e.Host == "" {
			return settings{}, nil, fmt.Errorf("sqs: URL %q: endpoint: want http(s)://host[:port]: %w",
				broker.Redact(u.String()), broker.ErrInvalidArgument)
		}
	}
	return st, q, nil
}

// broker builds a Broker with a client from the default AWS configuration
// chain (credentials, and the region unless the URL gives one).
func (st settings) broker(ctx context.Context) (*Broker, error) {
	if err := st.opts.withDefaults().validate(); err != nil {
		return nil, err
	}
	var loads []func(*config.LoadOptions) error
	if st.region != "" {
		loads = append(loads, config.WithRegion(st.region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loads...)
	if err != nil {
		return nil, fmt.Errorf("sqs: loading the AWS configuration: %w: %w", broker.ErrInvalidArgument, err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("sqs: no region: set region= in the URL, or AWS_REGION: %w", broker.ErrInvalidArgument)
	}
	client := sqs.NewFromConfig(cfg, func(o *sqs.Options) {
		if st.endpoint != "" {
			o.BaseEndpoint = aws.String(st.endpoint)
		}
	})
	return New(client, &st.opts)
}

func (opener) OpenPublisher(ctx context.Context, u *url.URL) (broker.Publisher, error) {
	st, q, err := parse(u)
	if err != nil {
		return nil, err
	}
	q.SkipConsumerOptions() // one URL serves publisher and consumers
	if err := q.Err(); err != nil {
		return nil, err
	}
	b, err := st.broker(ctx)
	if err != nil {
		return nil, err
	}
	return b.NewPublisher(), nil
}

func (opener) OpenConsumer(ctx context.Context, u *url.URL, base broker.ConsumerOptions) (broker.Consumer, error) {
	st, q, err := parse(u)
	if err != nil {
		return nil, err
	}
	co := q.ConsumerOptions(base)
	if err := q.Err(); err != nil {
		return nil, err
	}
	b, err := st.broker(ctx)
	if err != nil {
		return nil, err
	}
	return b.NewConsumer(&co)
}
