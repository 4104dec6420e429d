package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// tail reads through a consumer group of its own, so that it takes nothing
// from the services' groups. What such a throw-away group needs differs by
// broker and the portable API cannot express it, so it is spelled out here by
// URL scheme, following each adapter's documented topology.

// privateGroupParams are the consumer URL parameters, by scheme, that make a
// new group start at the end of the topic, so that tail shows what is
// published from now on. A parameter already in the URL wins.
var privateGroupParams = map[string]map[string]string{
	// A new Kafka group starts at the oldest retained record by default.
	"kafka": {"initial_offset": "latest"},
}

// privateGroupDroppers remove a private group when tail exits, by scheme, on
// brokers where a group left behind keeps collecting every message published
// to the topic.
var privateGroupDroppers = map[string]func(ctx context.Context, rawURL, topic, group string) error{
	"amqp":  dropRabbitGroup,
	"amqps": dropRabbitGroup,
}

// dropTimeout bounds the removal of a private group.
const dropTimeout = 10 * time.Second

// privateGroupURL returns the consumer URL for tail's private group.
func (e *env) privateGroupURL(group string) (string, error) {
	params := map[string]string{"group": group}
	if u, err := url.Parse(e.url); err == nil {
		q := u.Query()
		for k, v := range privateGroupParams[strings.ToLower(u.Scheme)] {
			if !q.Has(k) {
				params[k] = v
			}
		}
	}
	return e.consumerURL(params)
}

// dropPrivateGroup removes tail's private group where the broker keeps it,
// warning on stderr when it cannot. It runs after the consumer closed, also
// when ctx was cancelled by an interrupt.
func (e *env) dropPrivateGroup(ctx context.Context, topic, group string) {
	u, err := url.Parse(e.url)
	if err != nil {
		return
	}
	drop := privateGroupDroppers[strings.ToLower(u.Scheme)]
	if drop == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
	defer cancel()
	if err := drop(ctx, e.url, topic, group); err != nil {
		fmt.Fprintf(e.stderr, "brokerctl: could not remove tail's group %q of %s; delete it by hand: %v\n", group, topic, err)
	}
}

// dropRabbitGroup deletes the durable queue "<topic>.<group>" that is a
// consumer group on RabbitMQ (see package rabbitbroker), with whatever it holds.
func dropRabbitGroup(ctx context.Context, rawURL, topic, group string) error {
	if _, err := amqp.ParseURI(rawURL); err != nil {
		// Not wrapped: the parser's error repeats the URL, password included.
		return errors.New("the URL is not an AMQP URI")
	}
	deadline, _ := ctx.Deadline()
	conn, err := amqp.DialConfig(rawURL, amqp.Config{Dial: amqp.DefaultDial(time.Until(deadline))})
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	queue := topic + "." + group
	done := make(chan error, 1)
	go func() {
		_, err := ch.QueueDelete(queue, false, false, false)
		done <- err
	}()
	select {
	case err = <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("deleting queue %q: %w", queue, ctx.Err())
	}
}
