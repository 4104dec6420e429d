package rabbitbroker

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/brokerkit/broker"
)

func TestSplitKeepsAMQPParameters(t *testing.T) {
	u, _ := url.Parse("amqp://u:secret@h:5672/v?heartbeat=5&confirm_window=64&channel_pool=2&delivery_limit=9&auth_mechanism=plain&auth_mechanism=external")
	uri, q, o := split(u)
	if err := q.Err(); err != nil {
		t.Fatal(err)
	}
	if o.ConfirmWindow != 64 || o.ChannelPool != 2 || o.DeliveryLimit != 9 {
		t.Errorf("options = %+v", o)
	}
	p, err := amqp.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(uri, "heartbeat=5") || len(p.AuthMechanism) != 2 || p.Password != "secret" || p.Vhost != "v" {
		t.Errorf("URI handed to amqp091 = %+v", p)
	}
	if strings.Contains(uri, "confirm_window") {
		t.Errorf("adapter parameter left in the AMQP URI: %s", uri)
	}
}

func TestOpenRejectsBadParameters(t *testing.T) {
	for _, raw := range []string{
		"amqp://u:hunter2@127.0.0.1:1/?confirm_windw=3",
		"amqp://u:hunter2@127.0.0.1:1/?confirm_window=-3",
		"amqp://u:hunter2@127.0.0.1:1/?concurrency=-2", // a bad consumer option, on a publisher too
		"amqps://u:hunter2@127.0.0.1:1/?max_attempts=x",
	} {
		_, err := broker.OpenPublisher(context.Background(), raw)
		if !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("OpenPublisher(%s) = %v, want ErrInvalidArgument", raw, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	_, err := broker.OpenConsumer(context.Background(), "amqp://u:hunter2@127.0.0.1:1/?max_attempts=21")
	if !errors.Is(err, broker.ErrInvalidArgument) || !strings.Contains(err.Error(), "delivery_limit") {
		t.Errorf("max_attempts over the delivery limit = %v, want ErrInvalidArgument naming delivery_limit", err)
	}
}

func TestGoAPIRejectsAdapterParametersInURI(t *testing.T) {
	_, err := NewPublisher(context.Background(), "amqp://u:hunter2@127.0.0.1:1/?confirm_window=3", nil)
	if !errors.Is(err, broker.ErrInvalidArgument) || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("NewPublisher with an adapter parameter in the URI = %v", err)
	}
	_, err = NewPublisher(context.Background(), "http://h/", nil)
	if !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("NewPublisher with an http URI = %v", err)
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	// Port 1 on the loopback refuses at once.
	_, err := NewPublisher(context.Background(), "amqp://u:hunter2@127.0.0.1:1/", nil)
	if !errors.Is(err, broker.ErrUnavailable) || !broker.IsRetryable(err) {
		t.Errorf("NewPublisher to a closed port = %v, want a retryable ErrUnavailable", err)
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestErrorTable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want error
	}{
		{&amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no exchange 'x'"}, broker.ErrNotFound},
		{&amqp.Error{Code: amqp.AccessRefused}, broker.ErrPermissionDenied},
		{amqp.ErrCredentials, broker.ErrPermissionDenied},
		{&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg"}, broker.ErrInvalidArgument},
		{&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - message size 20 is larger than configured max size 10"}, broker.ErrMessageTooLarge},
		{&amqp.Error{Code: amqp.ContentTooLarge}, broker.ErrMessageTooLarge},
		{&amqp.Error{Code: amqp.ConnectionForced}, broker.ErrUnavailable},
		{&amqp.Error{Code: amqp.FrameError, Reason: "EOF"}, broker.ErrUnavailable},
		{amqp.ErrClosed, broker.ErrUnavailable},
		{errors.New("dial tcp: refused"), broker.ErrUnavailable},
	} {
		err := wrap("op", c.err)
		if !errors.Is(err, c.want) {
			t.Errorf("wrap(%v) = %v, want %v", c.err, err, c.want)
		}
		var ae *amqp.Error
		if _, native := c.err.(*amqp.Error); native && !errors.As(err, &ae) {
			t.Errorf("wrap(%v) lost the native error", c.err)
		}
	}
	if err := wrap("op", context.Canceled); err != context.Canceled {
		t.Errorf("wrap(context.Canceled) = %v, want it unwrapped", err)
	}
}

func TestParseMaxSize(t *testing.T) {
	if n := parseMaxSize("PRECONDITION_FAILED - message size 20000000 is larger than configured max size 16777216"); n != 16777216 {
		t.Errorf("parseMaxSize = %d", n)
	}
	if n := parseMaxSize("PRECONDITION_FAILED - other"); n != -1 {
		t.Errorf("parseMaxSize of another reason = %d", n)
	}
}

func TestCheckNames(t *testing.T) {
	if err := checkNames("amq.topic", "default"); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("reserved name: %v", err)
	}
	if err := checkNames(strings.Repeat("t", 250), "default"); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("long name: %v", err)
	}
	if err := checkNames("orders", "billing"); err != nil {
		t.Errorf("ordinary names: %v", err)
	}
}

func TestBoundedReturnsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	release := make(chan struct{})
	cleaned := make(chan int, 1)
	_, err := bounded(ctx, func() (int, error) { <-release; return 7, nil },
		func(v int, err error) { cleaned <- v })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("bounded = %v, want the context's error", err)
	}
	close(release)
	select {
	case v := <-cleaned:
		if v != 7 {
			t.Errorf("abandoned got %d", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the abandoned result was never released")
	}
}

func TestChannelCloseSettlesPendingMessages(t *testing.T) {
	s := newSender(nil, Options{ConfirmWindow: 4, ChannelPool: 1})
	pc := &pubChannel{s: s, window: make(chan struct{}, 4), closed: make(chan struct{}), pending: map[uint64]pending{}}
	b := newBatch(2)
	pc.pending[1] = pending{b: b, i: 0, id: "small", size: 10}
	pc.pending[2] = pending{b: b, i: 1, id: "big", size: 2000}
	pc.fail(&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1000"})
	<-b.done
	err := b.result("t", []*broker.Message{{ID: "small"}, {ID: "big"}})
	var pe *broker.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 2 {
		t.Fatalf("result = %v, want both messages named", err)
	}
	if !errors.Is(pe.Failed[0].Err, broker.ErrUnavailable) || errors.Is(pe.Failed[0].Err, broker.ErrMessageTooLarge) {
		t.Errorf("the message under the limit failed with %v, want only ErrUnavailable (retryable)", pe.Failed[0].Err)
	}
	if !errors.Is(pe.Failed[1].Err, broker.ErrMessageTooLarge) {
		t.Errorf("the message over the limit failed with %v, want ErrMessageTooLarge", pe.Failed[1].Err)
	}
	if !pc.isClosed() {
		t.Error("the channel is not marked closed")
	}
}
