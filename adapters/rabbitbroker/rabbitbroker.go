package rabbitbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// HeaderKey is the AMQP header that carries broker.Message.Key. The key also
// travels as the routing key, but the header keeps it exact where the routing
// key cannot: keys over 255 bytes, and routes that rewrite routing keys.
const HeaderKey = "x-brokerkit-key"

// Defaults for the zero fields of Options.
const (
	DefaultConfirmWindow  = 256
	DefaultChannelPool    = 4
	DefaultMaxMessageSize = 16 << 20
	DefaultDeliveryLimit  = 20
)

// name prefixes errors and logs.
const name = "amqp"

// Options configure publishers and consumers. The zero value is valid and
// means the documented defaults; the same settings can be given in a URL
// query (see the package documentation).
type Options struct {
	// ConfirmWindow is how many published messages may wait for their publisher
	// confirm on one channel; Publish waits when the window is full. Zero means
	// DefaultConfirmWindow (256).
	ConfirmWindow int
	// ChannelPool is how many channels a publisher spreads its publishes over,
	// on one connection. Zero means DefaultChannelPool (4).
	ChannelPool int
	// MaxMessageSize is the largest broker.Message.Size that Publish accepts; it
	// must not exceed the broker's max_message_size (16 MiB on RabbitMQ 4, 128 MiB
	// on 3.x). Zero means DefaultMaxMessageSize (16 MiB).
	MaxMessageSize int
	// DeliveryLimit is the x-delivery-limit of every consumer group queue: after
	// that many failed deliveries the broker dead-letters a message by itself.
	// It is a queue argument, so every publisher and consumer of a topic must
	// use the same value. A consumer's MaxAttempts must be at most
	// DeliveryLimit. Zero means DefaultDeliveryLimit (20).
	DeliveryLimit int
	// Config is the amqp091 dial configuration (TLS, SASL, heartbeat, dialer);
	// nil means amqp091's defaults. Its Vhost, when empty, comes from the URI.
	Config *amqp.Config
}

func (o *Options) withDefaults() (Options, error) {
	var v Options
	if o != nil {
		v = *o
	}
	if v.ConfirmWindow < 0 || v.ChannelPool < 0 || v.MaxMessageSize < 0 || v.DeliveryLimit < 0 {
		return v, fmt.Errorf("amqp: negative value in Options: %w", broker.ErrInvalidArgument)
	}
	if v.ConfirmWindow == 0 {
		v.ConfirmWindow = DefaultConfirmWindow
	}
	if v.ChannelPool == 0 {
		v.ChannelPool = DefaultChannelPool
	}
	if v.MaxMessageSize == 0 {
		v.MaxMessageSize = DefaultMaxMessageSize
	}
	if v.DeliveryLimit == 0 {
		v.DeliveryLimit = DefaultDeliveryLimit
	}
	if v.DeliveryLimit > deadLetterDeliveryLimit {
		return v, fmt.Errorf("amqp: Options.DeliveryLimit %d is over %d: %w", v.DeliveryLimit, deadLetterDeliveryLimit, broker.ErrInvalidArgument)
	}
	return v, nil
}

// uriParams are the query parameters amqp091 reads from an AMQP URI; they are
// passed through to it untouched.
var uriParams = []string{"heartbeat", "connection_timeout", "channel_max",
	"certfile", "keyfile", "cacertfile", "server_name_indication", "auth_mechanism"}

// checkURI validates an AMQP URI for NewPublisher and NewConsumer and returns
// it with its redacted form for errors.
func checkURI(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("amqp: malformed URI %q: %v: %w", broker.Redact(uri), err, broker.ErrInvalidArgument)
	}
	shown := broker.Redact(uri)
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return "", fmt.Errorf("amqp: URI %q: want amqp:// or amqps://: %w", shown, broker.ErrInvalidArgument)
	}
	for k := range u.Query() {
		if !slices.Contains(uriParams, k) {
			return "", fmt.Errorf("amqp: URI %q: parameter %q is not an AMQP URI parameter (%s); adapter settings go in Options, "+
				"or in the URL given to broker.OpenPublisher/OpenConsumer: %w", shown, k, strings.Join(uriParams, ", "), broker.ErrInvalidArgument)
		}
	}
	if _, err := amqp.ParseURI(uri); err != nil {
		return "", fmt.Errorf("amqp: URI %q: %w: %w", shown, broker.ErrInvalidArgument, scrub(err))
	}
	return shown, nil
}

func dialConfig(o Options) amqp.Config {
	if o.Config != nil {
		return *o.Config
	}
	return amqp.Config{}
}

// NewPublisher connects to the RabbitMQ node at uri (an AMQP URI,
// "amqp://user:password@host:port/vhost", with only amqp091's own query
// parameters) and returns a Publisher on that connection. It fails when the
// node cannot be reached or refuses the credentials; once open, the publisher
// reconnects by itself.
func NewPublisher(ctx context.Context, uri string, opts *Options) (*driver.Publisher, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	shown, err := checkURI(uri)
	if err != nil {
		return nil, err
	}
	s := newSender(newConnector(uri, shown, dialConfig(o), "brokerkit publisher"), o)
	if _, err := s.c.get(ctx); err != nil {
		_ = s.c.close()
		return nil, err
	}
	return driver.NewPublisher(name, s), nil
}

// NewConsumer connects to the RabbitMQ node at uri (see NewPublisher) and
// returns a Consumer with the given consumer options (nil means defaults).
// Dead letters are published on a second connection, opened on first use, as
// RabbitMQ advises keeping publishing and consuming apart.
func NewConsumer(ctx context.Context, uri string, opts *Options, co *broker.ConsumerOptions) (*driver.Consumer, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var c broker.ConsumerOptions
	if co != nil {
		c = *co
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("amqp: %w", err)
	}
	c = c.WithDefaults()
	if c.MaxAttempts > o.DeliveryLimit {
		return nil, fmt.Errorf("amqp: MaxAttempts %d needs a delivery_limit of at least %d (now %d), or the broker "+
			"dead-letters before the last attempt; set it on every publisher and consumer URL of the topic, as it is a queue argument: %w",
			c.MaxAttempts, c.MaxAttempts, o.DeliveryLimit, broker.ErrInvalidArgument)
	}
	shown, err := checkURI(uri)
	if err != nil {
		return nil, err
	}
	r := newReceiver(newConnector(uri, shown, dialConfig(o), "brokerkit consumer"), o, c)
	if _, err := r.c.get(ctx); err != nil {
		_ = r.c.close()
		return nil, err
	}
	dead := newSender(newConnector(uri, shown, dialConfig(o), "brokerkit dead-letter publisher"), o)
	cons, err := driver.NewConsumer(name, r, dead, c)
	if err != nil {
		_ = r.Close()
		_ = dead.Close()
		return nil, err
	}
	return cons, nil
}
