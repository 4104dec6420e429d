package rabbitbroker

import (
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/driver"
)

// headerDeliveryCount is the quorum queue's count of earlier deliveries.
const headerDeliveryCount = "x-delivery-count"

// publishing maps m to an AMQP message and its routing key: ID to message-id,
// Key to the routing key and HeaderKey, Headers to string headers, now to the
// timestamp; persistent.
func publishing(m *broker.Message, now time.Time) (amqp.Publishing, string) {
	key := m.Key
	if len(key) > maxShortString {
		key = "" // the key travels in HeaderKey alone
	}
	return amqp.Publishing{
		Headers:      outgoingHeaders(m),
		DeliveryMode: amqp.Persistent,
		MessageId:    m.ID,
		Timestamp:    now,
		Body:         m.Body,
	}, key
}

func outgoingHeaders(m *broker.Message) amqp.Table {
	if len(m.Headers) == 0 && m.Key == "" {
		return nil
	}
	t := make(amqp.Table, len(m.Headers)+1)
	for k, v := range m.Headers {
		t[k] = v
	}
	if m.Key != "" {
		t[HeaderKey] = m.Key
	}
	return t
}

// convert maps a delivery back to a broker.Message: Key from HeaderKey, else
// the routing key; Attempt from x-delivery-count.
func (s *subscription) convert(cc *consumerChan, d amqp.Delivery) *driver.Delivery {
	s.inFlight.Add(1)
	cc.acks.delivered(d.DeliveryTag)
	dl := &delivery{cc: cc, tag: d.DeliveryTag}
	m := &dl.msg
	m.ID = d.MessageId
	m.Key = d.RoutingKey
	m.Body = d.Body
	m.Topic = s.topic
	m.PublishedAt = d.Timestamp
	m.Attempt = 1
	if d.Redelivered {
		m.Attempt = 2 // at least; x-delivery-count says exactly
	}
	for k, v := range d.Headers {
		switch k {
		case HeaderKey:
			if key, ok := v.(string); ok {
				m.Key = key
			}
			continue
		case headerDeliveryCount:
			if n, ok := toInt(v); ok {
				m.Attempt = n + 1
			}
			continue
		}
		if str, ok := headerString(v); ok {
			if m.Headers == nil {
				m.Headers = make(map[string]string, len(d.Headers))
			}
			m.Headers[k] = str
		}
	}
	m.Native = d
	dl.dd.Message = m
	dl.dd.Handle = dl
	return &dl.dd
}

// headerString renders a scalar header value; tables and arrays (such as
// x-death) are left to Message.As.
func headerString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	case bool:
		return strconv.FormatBool(x), true
	case time.Time:
		return x.UTC().Format(time.RFC3339), true
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	}
	if n, ok := toInt(v); ok {
		return strconv.Itoa(n), true
	}
	return "", false
}

func toInt(v any) (int, bool) {
	switch x := v.(type) {
	case int:
		return x, true
	case int8:
		return int(x), true
	case int16:
		return int(x), true
	case int32:
		return int(x), true
	case int64:
		return int(x), true
	case uint8:
		return int(x), true
	case uint16:
		return int(x), true
	case uint32:
		return int(x), true
	case uint64:
		return int(x), true
	}
	return 0, false
}
