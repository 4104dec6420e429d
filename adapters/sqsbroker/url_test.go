package sqsbroker

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/brokerkit/broker"
)

func TestURLRejects(t *testing.T) {
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	ctx := context.Background()
	for _, raw := range []string{
		"sqs://user:hunter2@?region=us-east-1",
		"sqs://somehost?region=us-east-1",
		"sqs:///path",
		"sqs://?nope=1",
		"sqs://?region=us-east-1&wait_time=25s",
		"sqs://?region=us-east-1&visibility_timeout=1500ms",
		"sqs://?endpoint=ftp://x",
		"sqs://?endpoint=http://u:hunter2@127.0.0.1:9324",
		"sqs://?pollers=-1",
		"sqs://?max_message_size=2000000",
		"sqs://?create_queues=maybe",
	} {
		_, err := broker.OpenPublisher(ctx, raw)
		if !errors.Is(err, broker.ErrInvalidArgument) {
			t.Errorf("OpenPublisher(%q) = %v, want ErrInvalidArgument", raw, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("OpenPublisher(%q) error shows the password: %v", raw, err)
		}
	}
	// One URL serves publisher and consumers: a publisher ignores consumer
	// options, but checks their values.
	if _, err := broker.OpenPublisher(ctx, "sqs://?region=us-east-1&concurrency=x"); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("publisher with concurrency=x : %v, want ErrInvalidArgument", err)
	}
	if p, err := broker.OpenPublisher(ctx, "sqs://?region=us-east-1&concurrency=2&max_attempts=3"); err != nil {
		t.Errorf("publisher with consumer options: %v, want it to ignore them", err)
	} else {
		_ = p.Close()
	}
	if _, err := broker.OpenConsumer(ctx, "sqs://?group=billing"); !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("consumer with group=billing: %v, want ErrUnsupported", err)
	}
}

func TestURLOpens(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	ctx := context.Background()
	p, err := broker.OpenPublisher(ctx, "sqs://?region=eu-west-1&endpoint=http://127.0.0.1:1&create_queues=true&visibility_timeout=45s"+
		"&wait_time=5s&pollers=3&publish_concurrency=4&max_message_size=1048576&max_receive_count=9")
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	c, err := broker.OpenConsumer(ctx, "sqs://?region=eu-west-1&concurrency=4&order_by_key=true&max_attempts=3&group=default")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	st, q, err := parse(mustURL(t, "sqs://?region=eu-west-1&visibility_timeout=45s&pollers=3&max_receive_count=9&create_queues=1"))
	if err != nil || q.Err() != nil {
		t.Fatal(err, q.Err())
	}
	want := Options{CreateQueues: true, VisibilityTimeout: 45e9, Pollers: 3, MaxReceiveCount: 9}
	if st.opts != want || st.region != "eu-west-1" {
		t.Errorf("parsed %+v, want %+v", st, want)
	}
	if _, err := broker.OpenPublisher(ctx, "sqs://"); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("no region anywhere: %v, want ErrInvalidArgument", err)
	}
}
