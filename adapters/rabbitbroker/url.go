package rabbitbroker

import (
	"context"
	"net/url"
	"slices"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// Schemes this package registers.
const (
	Scheme    = "amqp"
	SchemeTLS = "amqps"
)

func init() {
	broker.Register(Scheme, opener{})
	broker.Register(SchemeTLS, opener{})
}

type opener struct{}

// split separates the adapter's parameters, read strictly by a driver.Query,
// from amqp091's own, which stay in the URI handed to it.
func split(u *url.URL) (uri string, q *driver.Query, o Options) {
	native, ours := url.Values{}, url.Values{}
	for k, vs := range u.Query() {
		if slices.Contains(uriParams, k) {
			native[k] = vs
		} else {
			ours[k] = vs
		}
	}
	nu, ou := *u, *u
	nu.RawQuery = native.Encode()
	ou.RawQuery = ours.Encode()
	q = driver.NewQuery(&ou)
	o = Options{
		ConfirmWindow:  q.Int("confirm_window", 0),
		ChannelPool:    q.Int("channel_pool", 0),
		MaxMessageSize: q.Int("max_message_size", 0),
		DeliveryLimit:  q.Int("delivery_limit", 0),
	}
	return nu.String(), q, o
}

func (opener) OpenPublisher(ctx context.Context, u *url.URL) (broker.Publisher, error) {
	uri, q, o := split(u)
	q.SkipConsumerOptions() // one URL serves publisher and consumers
	if err := q.Err(); err != nil {
		return nil, err
	}
	return NewPublisher(ctx, uri, &o)
}

func (opener) OpenConsumer(ctx context.Context, u *url.URL, base broker.ConsumerOptions) (broker.Consumer, error) {
	uri, q, o := split(u)
	co := q.ConsumerOptions(base)
	if err := q.Err(); err != nil {
		return nil, err
	}
	return NewConsumer(ctx, uri, &o, &co)
}
