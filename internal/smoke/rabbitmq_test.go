package smoke

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker/internal/testenv"
)

// TestRabbitMQQuorumQueue declares a quorum queue, publishes one message with
// publisher confirms and consumes it back.
func TestRabbitMQQuorumQueue(t *testing.T) {
	url := testenv.AMQPURL(t)
	ctx := deadline(t, 30*time.Second)

	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}

	queue := uniqueName(t)
	if _, err := ch.QueueDeclare(queue, true, false, false, false,
		amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		t.Fatalf("declare quorum queue: %v", err)
	}
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			ch.QueueDelete(queue, false, false, false)
		}
	})

	// Declaring the same name as a classic queue must fail with PRECONDITION_FAILED:
	// proof that the server made a quorum queue rather than ignoring the argument.
	probe, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	_, err = probe.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeClassic})
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.PreconditionFailed {
		t.Fatalf("redeclaring %s as classic: err = %v, want PRECONDITION_FAILED", queue, err)
	}

	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	body := []byte("hello " + queue)
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent,
		ContentType:  "text/plain",
		MessageId:    queue,
		Body:         body,
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	acked, err := conf.WaitContext(ctx)
	if err != nil {
		t.Fatalf("waiting for the publisher confirm: %v", err)
	}
	if !acked {
		t.Fatal("broker nacked the publish")
	}

	deliveries, err := ch.ConsumeWithContext(ctx, queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	select {
	case d, ok := <-deliveries:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		if string(d.Body) != string(body) || d.MessageId != queue {
			t.Errorf("got body %q id %q, want %q id %q", d.Body, d.MessageId, body, queue)
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("no delivery from %s: %v", queue, ctx.Err())
	}
}
